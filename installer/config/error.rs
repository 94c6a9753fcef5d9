//! The errors of loading a cluster file: a file that cannot be read, or a list of problems, each
//! with the file, line and column where the user can fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A position in a cluster file as the user wrote it, before `${VAR}` substitution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Location {
    /// The file name as given on the command line, or `<stdin>`.
    pub file: String,
    /// Line number, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One thing wrong with a cluster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The description of what is wrong, naming the field and the value.
    pub message: String,
    /// The position, or `None` when the problem concerns the file set as a whole.
    pub location: Option<Location>,
    /// The change that fixes it, phrased to follow the location after a comma.
    pub fix: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>, location: Option<Location>) -> Problem {
        Problem {
            message: message.into(),
            location,
            fix: None,
        }
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Problem {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        if let Some(fix) = &self.fix {
            write!(f, ", {fix}")?;
        }
        Ok(())
    }
}

/// Loading the cluster files failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cluster file {path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("cannot read trusted key file {path} named at {location}")]
    ReadKey {
        path: PathBuf,
        location: Location,
        #[source]
        source: io::Error,
    },

    #[error("no cluster file given")]
    NoFiles,

    /// Every problem found, in file order. The list is never empty.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Returns the problems of an invalid file set, or nothing for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut text = match problems.len() {
        1 => "the cluster file has 1 problem:".to_string(),
        count => format!("the cluster file has {count} problems:"),
    };
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_puts_location_before_fix() {
        let location = Location {
            file: "hosts.yaml".into(),
            line: 7,
            column: 9,
        };
        let problem = Problem::new("unknown field \"adress\"", Some(location))
            .with_fix("did you mean \"address\"?");
        assert_eq!(
            problem.to_string(),
            "unknown field \"adress\" at hosts.yaml:7:9, did you mean \"address\"?"
        );
    }

    #[test]
    fn invalid_lists_one_problem_per_line() {
        let error = ConfigError::Invalid(vec![
            Problem::new("first", None),
            Problem::new("second", None).with_fix("change it"),
        ]);
        assert_eq!(
            error.to_string(),
            "the cluster file has 2 problems:\n  first\n  second, change it"
        );
    }
}
