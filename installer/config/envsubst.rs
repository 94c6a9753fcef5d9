//! `${VAR}` substitution in cluster files, with the semantics of the Go package a8m/envsubst that
//! k0sctl runs over every file before parsing it.
//!
//! Supported forms: `$VAR`, `${VAR}`, `${VAR-default}`, `${VAR:-default}`, `${VAR=default}`,
//! `${VAR:=default}`, `${VAR+other}`, `${VAR:+other}`, and `$$` for a literal `$`. A default may
//! itself contain `$VAR` or `${VAR}`. An unset variable without a default becomes the empty
//! string, as in k0sctl, and its name is returned so that the caller can warn.
//!
//! The substitution also records where it replaced text, so that a position found by the YAML
//! parser in the substituted text can be mapped back to the line and column the user wrote.

/// One stretch of the input that was replaced, in byte offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    pub input_start: usize,
    pub input_end: usize,
    pub output_start: usize,
    pub output_end: usize,
}

/// The substituted text and what it took to get there.
#[derive(Debug, Default)]
pub struct Substituted {
    pub text: String,
    /// Replacements in increasing order of offset.
    pub replacements: Vec<Replacement>,
    /// Variables that were unset and had no default, in order of first use.
    pub unset: Vec<String>,
}

impl Substituted {
    /// Maps a byte offset in the substituted text to the byte offset in the input. An offset
    /// inside a replaced value maps to the start of the expression that produced it.
    pub fn input_offset(&self, output_offset: usize) -> usize {
        let preceding = self
            .replacements
            .partition_point(|r| r.output_start <= output_offset);
        match preceding.checked_sub(1).map(|i| &self.replacements[i]) {
            None => output_offset,
            Some(r) if output_offset < r.output_end => r.input_start,
            Some(r) => output_offset - r.output_end + r.input_end,
        }
    }
}

/// A `${` expression that cannot be substituted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct SubstitutionError {
    /// Byte offset of the `$` that starts the expression.
    pub offset: usize,
    pub message: String,
}

/// Substitutes every variable in `input`, looking values up with `lookup`.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstitutionError> {
    let mut scanner = Scanner {
        input,
        lookup,
        unset: Vec::new(),
    };
    let mut out = Substituted::default();
    let mut copied_from = 0;
    let mut position = 0;

    while let Some(relative) = input[position..].find('$') {
        let start = position + relative;
        let Some((value, end)) = scanner.expression(start)? else {
            position = start + 1;
            continue;
        };
        out.text.push_str(&input[copied_from..start]);
        let output_start = out.text.len();
        out.text.push_str(&value);
        out.replacements.push(Replacement {
            input_start: start,
            input_end: end,
            output_start,
            output_end: out.text.len(),
        });
        copied_from = end;
        position = end;
    }
    out.text.push_str(&input[copied_from..]);
    out.unset = scanner.unset;
    Ok(out)
}

struct Scanner<'a> {
    input: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: Vec<String>,
}

/// The operator between the name and the word in `${NAME<op>word}`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `-` and `=`: the word when the variable is unset.
    DefaultIfUnset,
    /// `:-` and `:=`: the word when the variable is unset or empty.
    DefaultIfEmpty,
    /// `+`: the word when the variable is set.
    AlternativeIfSet,
    /// `:+`: the word when the variable is set and not empty.
    AlternativeIfNotEmpty,
}

impl Scanner<'_> {
    /// Reads the expression that starts with the `$` at `start`. Returns its value and the offset
    /// after it, or `None` when the `$` is literal text.
    fn expression(&mut self, start: usize) -> Result<Option<(String, usize)>, SubstitutionError> {
        let rest = &self.input[start + 1..];
        match rest.chars().next() {
            Some('$') => Ok(Some(("$".to_string(), start + 2))),
            Some('{') => self.braced(start).map(Some),
            Some(c) if is_name_char(c) => {
                let name_len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
                let name = &rest[..name_len];
                // a8m/envsubst leaves a lone `$_` as text.
                if name == "_" {
                    return Ok(None);
                }
                Ok(Some((self.value_or_empty(name), start + 1 + name_len)))
            }
            _ => Ok(None),
        }
    }

    /// Reads `${NAME}` or `${NAME<op>word}` starting at the `$` at `start`.
    fn braced(&mut self, start: usize) -> Result<(String, usize), SubstitutionError> {
        let error = |message: &str| SubstitutionError {
            offset: start,
            message: message.to_string(),
        };
        let name_start = start + 2;
        let after_brace = &self.input[name_start..];
        let name_len = after_brace
            .find(|c: char| !is_name_char(c))
            .unwrap_or(after_brace.len());
        if name_len == 0 {
            return Err(error("expected a variable name after \"${\""));
        }
        let name = &after_brace[..name_len];
        let rest = &after_brace[name_len..];

        let (operator, operator_len) = if rest.starts_with('}') {
            return Ok((self.value_or_empty(name), name_start + name_len + 1));
        } else if rest.starts_with(":-") || rest.starts_with(":=") {
            (Operator::DefaultIfEmpty, 2)
        } else if rest.starts_with(":+") {
            (Operator::AlternativeIfNotEmpty, 2)
        } else if rest.starts_with('-') || rest.starts_with('=') {
            (Operator::DefaultIfUnset, 1)
        } else if rest.starts_with('+') {
            (Operator::AlternativeIfSet, 1)
        } else if rest.is_empty() || rest.starts_with(['\n', '\r']) {
            return Err(error("closing brace expected"));
        } else {
            return Err(error(&format!(
                "unsupported operator after \"${{{name}\": expected \"}}\", \"-\", \":-\", \"=\", \":=\", \"+\" or \":+\""
            )));
        };

        let word_start = name_start + name_len + operator_len;
        let word_end = self
            .closing_brace(word_start)
            .ok_or_else(|| error("closing brace expected"))?;
        let value = (self.lookup)(name);
        let use_word = match operator {
            Operator::DefaultIfUnset => value.is_none(),
            Operator::DefaultIfEmpty => value.as_deref().is_none_or(str::is_empty),
            Operator::AlternativeIfSet => value.is_some(),
            Operator::AlternativeIfNotEmpty => value.as_deref().is_some_and(|v| !v.is_empty()),
        };
        let result = if use_word {
            self.word(word_start, word_end)?
        } else if matches!(
            operator,
            Operator::AlternativeIfSet | Operator::AlternativeIfNotEmpty
        ) {
            String::new()
        } else {
            value.unwrap_or_default()
        };
        Ok((result, word_end + 1))
    }

    /// Finds the `}` that closes a word starting at `from`, skipping nested `${...}` and stopping
    /// at the end of the line as a8m/envsubst does.
    fn closing_brace(&self, from: usize) -> Option<usize> {
        let mut depth = 0usize;
        let bytes = self.input.as_bytes();
        let mut i = from;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => return None,
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    depth += 1;
                    i += 1;
                }
                b'}' if depth == 0 => return Some(i),
                b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// Expands the variables inside a default or alternative word.
    fn word(&mut self, start: usize, end: usize) -> Result<String, SubstitutionError> {
        let mut value = String::new();
        let mut position = start;
        while let Some(relative) = self.input[position..end].find('$') {
            let dollar = position + relative;
            value.push_str(&self.input[position..dollar]);
            match self.expression(dollar)? {
                Some((expanded, after)) => {
                    value.push_str(&expanded);
                    position = after;
                }
                None => {
                    value.push('$');
                    position = dollar + 1;
                }
            }
        }
        value.push_str(&self.input[position..end]);
        Ok(value)
    }

    fn value_or_empty(&mut self, name: &str) -> String {
        match (self.lookup)(name) {
            Some(value) => value,
            None => {
                if !self.unset.iter().any(|known| known == name) {
                    self.unset.push(name.to_string());
                }
                String::new()
            }
        }
    }
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "VERSION" => Some("v1.35.3+k0s.0".into()),
            _ => None,
        }
    }

    fn expand(input: &str) -> String {
        substitute(input, &env).unwrap().text
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(expand("a: $HOST"), "a: 10.0.0.1");
        assert_eq!(expand("a: ${HOST}:22"), "a: 10.0.0.1:22");
        assert_eq!(expand("v: \"${VERSION}\""), "v: \"v1.35.3+k0s.0\"");
    }

    #[test]
    fn defaults_follow_set_and_empty_rules() {
        assert_eq!(expand("${MISSING:-x}"), "x");
        assert_eq!(expand("${EMPTY:-x}"), "x");
        assert_eq!(expand("${EMPTY-x}"), "");
        assert_eq!(expand("${MISSING-x}"), "x");
        assert_eq!(expand("${MISSING:=x}"), "x");
        assert_eq!(expand("${HOST:-x}"), "10.0.0.1");
        assert_eq!(expand("${HOST:+set}"), "set");
        assert_eq!(expand("${EMPTY:+set}"), "");
        assert_eq!(expand("${EMPTY+set}"), "set");
        assert_eq!(expand("${MISSING+set}"), "");
    }

    #[test]
    fn default_may_contain_variables() {
        assert_eq!(expand("${MISSING:-$HOST}"), "10.0.0.1");
        assert_eq!(expand("${MISSING:-${HOST}:22}"), "10.0.0.1:22");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(expand("echo $$HOST"), "echo $HOST");
        assert_eq!(expand("cost: 5$"), "cost: 5$");
        assert_eq!(expand("a $ b $_ c"), "a $ b $_ c");
    }

    #[test]
    fn unset_variable_becomes_empty_and_is_reported() {
        let result = substitute("a: $NOPE b: ${NOPE} c: ${OTHER:-d}", &env).unwrap();
        assert_eq!(result.text, "a:  b:  c: d");
        assert_eq!(result.unset, vec!["NOPE".to_string()]);
    }

    #[test]
    fn unclosed_brace_is_an_error() {
        let error = substitute("a: 1\nb: ${HOST\nc: 2", &env).unwrap_err();
        assert_eq!(error.offset, 8);
        assert_eq!(error.message, "closing brace expected");
        let error = substitute("b: ${HOST:-x\n", &env).unwrap_err();
        assert_eq!(error.message, "closing brace expected");
    }

    #[test]
    fn offsets_map_back_to_the_input() {
        let result = substitute("ab ${HOST} cd $$ ef", &env).unwrap();
        assert_eq!(result.text, "ab 10.0.0.1 cd $ ef");
        // Before the first replacement offsets are unchanged.
        assert_eq!(result.input_offset(1), 1);
        // Inside the value: the start of `${HOST}`.
        assert_eq!(result.input_offset(5), 3);
        // "cd" follows the value: 12 in the output, 11 in the input.
        assert_eq!(result.input_offset(12), 11);
        // "ef" follows the `$$`, which became one byte.
        assert_eq!(result.input_offset(17), 17);
    }
}
