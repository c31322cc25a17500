//! Token checks on the `Authorization` header, as providers make them: which schemes
//! go before the token (`Bearer`, Fly's `FlyV1`, GitHub's `token`), whether a bare
//! token will do, and whether one must be sent when any token would be accepted.
//!
//! It says only whether and why a request is refused; the emulator words the 401.

/// How an emulator checks tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRule {
    /// Schemes accepted before the token, matched case-insensitively as HTTP wants.
    pub schemes: &'static [&'static str],
    /// A token with no scheme in front is accepted too.
    pub bare: bool,
    /// The token requests must carry; `None` accepts any.
    pub token: Option<String>,
    /// Whether some token must be sent even when any would do.
    pub required: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all.
    Missing,
    /// Credentials in an unknown scheme, empty, or not the token.
    Wrong,
}

impl Refusal {
    /// GitHub's wording, plain enough for any emulator without its own.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "Requires authentication",
            Refusal::Wrong => "Bad credentials",
        }
    }
}

impl TokenRule {
    /// Lets every request through.
    pub fn open() -> TokenRule {
        TokenRule { schemes: &[], bare: true, token: None, required: false }
    }

    /// Checks the `Authorization` header's value, if any.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        if self.token.is_none() && !self.required {
            return Ok(());
        }
        let given = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(Refusal::Missing)?;
        let given = self.credential(given).ok_or(Refusal::Wrong)?;
        match &self.token {
            // The configured token may carry its scheme too, as Fly tokens are often
            // kept ("FlyV1 fm2_..."), so both sides lose it before comparing.
            Some(token) if self.credential(token.trim()).unwrap_or(token) != given => Err(Refusal::Wrong),
            _ => Ok(()),
        }
    }

    /// The token in `value`, once its scheme is off; None when neither a known scheme
    /// nor (if allowed) a bare token, or when empty.
    fn credential<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (first, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        let token = if self.schemes.iter().any(|s| s.eq_ignore_ascii_case(first)) && !rest.trim().is_empty() {
            rest.trim()
        } else if self.bare {
            value
        } else {
            return None;
        };
        (!token.is_empty()).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fly(token: Option<&str>) -> TokenRule {
        TokenRule { schemes: &["Bearer", "FlyV1"], bare: true, token: token.map(str::to_string), required: false }
    }

    fn github(token: Option<&str>) -> TokenRule {
        TokenRule { schemes: &["Bearer", "token"], bare: false, token: token.map(str::to_string), required: true }
    }

    #[test]
    fn without_a_token_set_an_optional_rule_lets_anything_through() {
        for header in [None, Some(""), Some("Basic Zm9v"), Some("Bearer whatever")] {
            assert_eq!(fly(None).check(header), Ok(()), "{header:?}");
            assert_eq!(TokenRule::open().check(header), Ok(()), "{header:?}");
        }
    }

    #[test]
    fn every_scheme_and_a_bare_token_work_where_allowed() {
        let rule = fly(Some("fm2_secret"));
        for header in ["FlyV1 fm2_secret", "Bearer fm2_secret", "bearer  fm2_secret ", "fm2_secret"] {
            assert_eq!(rule.check(Some(header)), Ok(()), "{header}");
        }
        assert_eq!(rule.check(Some("Bearer fm2_other")), Err(Refusal::Wrong));
        assert_eq!(rule.check(None), Err(Refusal::Missing));
        assert_eq!(rule.check(Some("Bearer")), Err(Refusal::Wrong));
    }

    #[test]
    fn a_configured_token_may_carry_its_scheme() {
        let rule = fly(Some("FlyV1 fm2_secret"));
        assert_eq!(rule.check(Some("Bearer fm2_secret")), Ok(()));
        assert_eq!(rule.check(Some("fm2_secret")), Ok(()));
    }

    #[test]
    fn a_required_token_must_be_sent_in_a_known_scheme() {
        let any = github(None);
        assert_eq!(any.check(None), Err(Refusal::Missing));
        assert_eq!(any.check(Some("token anything")), Ok(()));
        assert_eq!(any.check(Some("Bearer ")), Err(Refusal::Wrong), "empty");
        assert_eq!(any.check(Some("ghs_bare")), Err(Refusal::Wrong), "no bare tokens");
        assert_eq!(any.check(Some("Basic Z2hz")), Err(Refusal::Wrong));
        let one = github(Some("ghs_right"));
        assert_eq!(one.check(Some("TOKEN ghs_right")), Ok(()));
        assert_eq!(one.check(Some("Bearer ghs_wrong")), Err(Refusal::Wrong));
    }
}
