//! The field-path tracking error collector validation runs with.

use std::fmt::Write;

use crate::error::FieldError;

/// Collects errors while walking a spec, tracking the current field path in one
/// reused buffer so that nothing is allocated unless an error is reported.
pub(crate) struct Checker<'a> {
    /// The resource's namespace (for rules that depend on it).
    pub namespace: &'a str,
    path: String,
    errors: Vec<FieldError>,
}

impl<'a> Checker<'a> {
    /// A checker rooted at `spec`.
    pub fn new(namespace: &'a str) -> Self {
        let mut path = String::with_capacity(96);
        path.push_str("spec");
        Self {
            namespace,
            path,
            errors: Vec::new(),
        }
    }

    /// The errors found.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Reports an error with a path of its own.
    pub fn push_error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// Runs `f` inside `.field`.
    pub fn at<R>(&mut self, field: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('.');
        self.path.push_str(field);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` inside `[index]`.
    pub fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "[{index}]");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` for each item of the list at `.field`, inside `.field[i]`.
    pub fn each<T>(&mut self, field: &str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            return;
        }
        self.at(field, |c| {
            for (i, item) in items.iter().enumerate() {
                c.index(i, |c| f(c, item));
            }
        });
    }

    /// Runs `f` for `value` at `.field` when it is present.
    pub fn opt<T>(&mut self, field: &str, value: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        if let Some(v) = value {
            self.at(field, |c| f(c, v));
        }
    }

    /// Reports an error at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: self.path.clone(),
            message: message.into(),
        });
    }

    /// Reports an error at `.field` below the current path.
    pub fn error_at(&mut self, field: &str, message: impl Into<String>) {
        let mut path = String::with_capacity(self.path.len() + field.len() + 1);
        path.push_str(&self.path);
        if !field.starts_with('[') {
            path.push('.');
        }
        path.push_str(field);
        self.errors.push(FieldError {
            field: path,
            message: message.into(),
        });
    }

    /// Reports an error at `.field[index]` below the current path.
    pub fn error_at_index(&mut self, field: &str, index: usize, message: impl Into<String>) {
        self.at(field, |c| c.index(index, |c| c.error(message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_paths() {
        let mut c = Checker::new("ns");
        c.at("http", |c| c.index(2, |c| c.error_at("route", "bad")));
        c.each("tcp", &[1, 2], |c, n| {
            if *n == 2 {
                c.error("two");
            }
        });
        c.error_at_index("hosts", 0, "h");
        let errs = c.into_errors();
        assert_eq!(errs[0].field, "spec.http[2].route");
        assert_eq!(errs[1].field, "spec.tcp[1]");
        assert_eq!(errs[2].field, "spec.hosts[0]");
    }
}
