//! A list of errors from an operation that keeps going after a failure
//! (teardown, detach): it did all it could and reports everything it met.

use std::fmt;

/// Every error met; `Display` joins them with "; ", `source` is the first.
#[derive(Debug)]
pub struct ErrorList<E>(pub Vec<E>);

impl<E> Default for ErrorList<E> {
    fn default() -> Self {
        ErrorList(Vec::new())
    }
}

impl<E> ErrorList<E> {
    /// `Ok` when nothing went wrong.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl<E: fmt::Display> fmt::Display for ErrorList<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ErrorList<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .first()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
