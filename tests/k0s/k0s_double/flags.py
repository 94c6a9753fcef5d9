"""Command-line flags parsed the way cobra/pflag (the Go library k0s uses) parses them:
`--name=value`, `--name value`, bare boolean `--name`, `--name=true|false`, `-x value`, `-xvalue`,
flags and arguments in any order, and `--` to end flags."""

from .errors import K0sError


class Flag:
    def __init__(self, name, kind="string", short=None, default=None, hidden_deprecated=False):
        self.name = name
        self.kind = kind  # bool, string, int, list (comma-separated, repeatable), array (repeatable)
        self.short = short
        self.default = default
        self.deprecated = hidden_deprecated


DEBUG_FLAGS = [
    Flag("debug", "bool", "d"),
    Flag("verbose", "bool", "v"),
    Flag("debugListenOn"),
]


class Parsed:
    def __init__(self):
        self.values = {}
        self.changed = []  # (name, value) in command-line order
        self.args = []

    def get(self, name, default=None):
        return self.values.get(name, default)

    def is_set(self, name):
        return name in self.values


def _parse_bool(name, text):
    if text in ("true", "True", "TRUE", "1", "t", "T"):
        return True
    if text in ("false", "False", "FALSE", "0", "f", "F"):
        return False
    raise K0sError('invalid argument "%s" for "--%s" flag: strconv.ParseBool: parsing "%s": invalid syntax' % (text, name, text))


def parse(argv, flags):
    """Parses argv against `flags` (a list of Flag); raises K0sError with cobra's wording."""
    by_name = {flag.name: flag for flag in flags}
    by_short = {flag.short: flag for flag in flags if flag.short}
    parsed = Parsed()
    index = 0

    def store(flag, value):
        if flag.kind == "bool":
            value = _parse_bool(flag.name, value) if isinstance(value, str) else value
        elif flag.kind == "int":
            try:
                value = int(value)
            except ValueError:
                raise K0sError('invalid argument "%s" for "--%s" flag: strconv.ParseInt: parsing "%s": invalid syntax' % (value, flag.name, value))
        elif flag.kind == "list":
            previous = parsed.values.get(flag.name, [])
            value = previous + [part for part in value.split(",") if part != ""] if value else previous
        elif flag.kind == "array":
            value = parsed.values.get(flag.name, []) + [value]
        parsed.values[flag.name] = value
        parsed.changed.append((flag.name, value))

    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            parsed.args.extend(argv[index:])
            break
        if arg.startswith("--") and len(arg) > 2:
            name, has_value, value = arg[2:].partition("=")
            flag = by_name.get(name)
            if flag is None:
                raise K0sError("unknown flag: --%s" % name)
            if not has_value:
                if flag.kind == "bool":
                    value = True
                elif index < len(argv):
                    value = argv[index]
                    index += 1
                else:
                    raise K0sError("flag needs an argument: --%s" % name)
            store(flag, value)
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                flag = by_short.get(letter)
                if flag is None:
                    raise K0sError("unknown shorthand flag: '%s' in %s" % (letter, arg))
                if flag.kind == "bool":
                    if letters.startswith("="):
                        store(flag, letters[1:])
                        letters = ""
                    else:
                        store(flag, True)
                    continue
                if letters:
                    store(flag, letters[1:] if letters.startswith("=") else letters)
                elif index < len(argv):
                    store(flag, argv[index])
                    index += 1
                else:
                    raise K0sError("flag needs an argument: '%s' in -%s" % (letter, letter))
                letters = ""
        else:
            parsed.args.append(arg)
    return parsed
