//! The denier adapter: refuses every request it is sent, with a configured status.
//!
//! Params: `status` (`code`, `message`; default FAILED_PRECONDITION), and how long
//! and how often the refusal may be reused (`validDuration`, default 5s;
//! `validUseCount`, default 1000).

use std::time::Duration;

use serde::Deserialize;

use super::{CheckResult, ParamsError, code, decode_params, parse_duration};

const NAME: &str = "denier";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    valid_duration: Option<String>,
    #[serde(default)]
    valid_use_count: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

/// A configured denier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denier {
    result: CheckResult,
}

impl Denier {
    /// Builds a denier from handler params.
    pub fn new(params: &serde_json::Value) -> Result<Self, ParamsError> {
        let p: Params = decode_params(NAME, params)?;
        let (code, message) = match p.status {
            Some(s) if s.code != code::OK => (s.code, s.message),
            Some(s) if s.code == code::OK && !s.message.is_empty() => {
                return Err(ParamsError::new(
                    NAME,
                    "status.code 0 (OK) would allow every request; a denier denies",
                ));
            }
            _ => (code::FAILED_PRECONDITION, "denied by policy".to_string()),
        };
        if !(1..=16).contains(&code) {
            return Err(ParamsError::new(
                NAME,
                format!("status.code {code} is not a gRPC status code (1-16)"),
            ));
        }
        let valid_duration = match &p.valid_duration {
            Some(d) => parse_duration(NAME, "validDuration", d)?,
            None => Duration::from_secs(5),
        };
        let valid_use_count = p.valid_use_count.unwrap_or(1000);
        if valid_use_count < 0 {
            return Err(ParamsError::new(NAME, "validUseCount must not be negative"));
        }
        Ok(Self {
            result: CheckResult {
                code,
                message,
                valid_duration,
                valid_use_count,
            },
        })
    }

    /// The refusal.
    pub fn check(&self) -> CheckResult {
        self.result.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn denies_with_the_configured_status_or_failed_precondition() {
        let d = Denier::new(&json!({"status": {"code": 7, "message": "not you"}, "validDuration": "10s", "validUseCount": 3})).unwrap();
        let r = d.check();
        assert_eq!(
            (r.code, r.message.as_str()),
            (code::PERMISSION_DENIED, "not you")
        );
        assert_eq!(
            (r.valid_duration, r.valid_use_count),
            (Duration::from_secs(10), 3)
        );
        let r = Denier::new(&serde_json::Value::Null).unwrap().check();
        assert_eq!(r.code, code::FAILED_PRECONDITION);
        assert!(!r.is_ok());
    }

    #[test]
    fn bad_params_are_refused_naming_the_field() {
        for (params, needle) in [
            (json!({"status": {"code": 0, "message": "x"}}), "OK"),
            (json!({"status": {"code": 99}}), "status.code 99"),
            (json!({"validDuration": "soon"}), "validDuration"),
            (json!({"validUseCount": -1}), "validUseCount"),
            (json!({"statuz": {}}), "unknown field"),
        ] {
            let e = Denier::new(&params).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
    }
}
