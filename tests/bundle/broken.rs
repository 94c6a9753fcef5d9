//! One way to break a bundle per test, each rejected with a message that names the problem.
