//! Request bodies of the two write endpoints, checked the way GitHub checks them:
//! required fields, JSON types, the state enum and the 140-character description.
//! A failure names the field and one of GitHub's documented error codes, so the 422
//! says what a client got wrong.

use serde_json::{json, Map, Value};

/// The deployment status states GitHub accepts.
pub const STATES: [&str; 7] = ["error", "failure", "inactive", "in_progress", "queued", "pending", "success"];

/// The longest status description GitHub accepts, in characters.
pub const MAX_STATUS_DESCRIPTION: usize = 140;

/// One entry of a 422's `errors` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub resource: &'static str,
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn to_json(&self) -> Value {
        json!({ "resource": self.resource, "field": self.field, "code": self.code, "message": self.message })
    }
}

/// A create-deployment body. Optional fields keep whether they were sent, so tests can
/// tell `auto_merge: false` from a client that left it to GitHub's default (true).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeployment {
    pub r#ref: String,
    pub task: String,
    pub auto_merge: Option<bool>,
    pub required_contexts: Option<Vec<String>>,
    pub payload: Value,
    pub environment: String,
    pub description: Option<String>,
    pub transient_environment: bool,
    pub production_environment: bool,
}

/// A create-status body; as with deployments, what was not sent stays `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStatus {
    pub state: String,
    pub target_url: Option<String>,
    pub log_url: Option<String>,
    pub description: Option<String>,
    pub environment: Option<String>,
    pub environment_url: Option<String>,
    pub auto_inactive: Option<bool>,
}

/// Reads one body's fields, collecting every problem rather than stopping at the first.
struct Fields<'a> {
    resource: &'static str,
    body: &'a Map<String, Value>,
    problems: Vec<Invalid>,
}

impl<'a> Fields<'a> {
    fn new(resource: &'static str, body: &'a Value) -> Result<Fields<'a>, Vec<Invalid>> {
        match body.as_object() {
            Some(body) => Ok(Fields { resource, body, problems: Vec::new() }),
            None => Err(vec![Invalid {
                resource,
                field: "body",
                code: "invalid",
                message: "the request body must be a JSON object".into(),
            }]),
        }
    }

    fn problem(&mut self, field: &'static str, code: &'static str, message: String) {
        self.problems.push(Invalid { resource: self.resource, field, code, message });
    }

    fn wrong_type(&mut self, field: &'static str, expected: &str) {
        let got = &self.body[field];
        self.problem(field, "invalid", format!("{field} must be {expected}, not {got}"));
    }

    /// A field GitHub reads as "not sent" when it is absent; null counts as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.body.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &'static str) -> Option<String> {
        match self.get(field)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(field, "a string");
                None
            }
        }
    }

    fn required_string(&mut self, field: &'static str) -> String {
        if self.get(field).is_none() {
            self.problem(field, "missing_field", format!("\"{field}\" wasn't supplied."));
            return String::new();
        }
        self.string(field).unwrap_or_default()
    }

    fn boolean(&mut self, field: &'static str) -> Option<bool> {
        match self.get(field)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(field, "a boolean");
                None
            }
        }
    }

    fn strings(&mut self, field: &'static str) -> Option<Vec<String>> {
        let items =
            self.get(field)?.as_array().and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
        if items.is_none() {
            self.wrong_type(field, "an array of strings");
        }
        items
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Invalid>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

impl NewDeployment {
    pub fn parse(body: &Value) -> Result<NewDeployment, Vec<Invalid>> {
        let mut f = Fields::new("Deployment", body)?;
        let r#ref = f.required_string("ref");
        if f.get("ref").is_some_and(Value::is_string) && r#ref.trim().is_empty() {
            f.problem("ref", "invalid", "ref must not be empty".into());
        }
        let task = f.string("task").unwrap_or_else(|| "deploy".into());
        let auto_merge = f.boolean("auto_merge");
        let required_contexts = f.strings("required_contexts");
        // The payload is kept as sent: an object stays an object and a string (GitHub
        // calls it "JSON text") stays a string; absent means {}.
        let payload = match f.get("payload") {
            None => json!({}),
            Some(v @ (Value::Object(_) | Value::String(_))) => v.clone(),
            Some(_) => {
                f.wrong_type("payload", "an object or a JSON string");
                Value::Null
            }
        };
        let environment = f.string("environment").unwrap_or_else(|| "production".into());
        let description = f.string("description");
        let transient_environment = f.boolean("transient_environment").unwrap_or(false);
        let production_environment = f.boolean("production_environment").unwrap_or(environment == "production");
        f.finish(NewDeployment {
            r#ref,
            task,
            auto_merge,
            required_contexts,
            payload,
            environment,
            description,
            transient_environment,
            production_environment,
        })
    }
}

impl NewStatus {
    pub fn parse(body: &Value) -> Result<NewStatus, Vec<Invalid>> {
        let mut f = Fields::new("DeploymentStatus", body)?;
        let state = f.required_string("state");
        if f.get("state").is_some_and(Value::is_string) && !STATES.contains(&state.as_str()) {
            let message = format!("state \"{state}\" is not one of {}", STATES.join(", "));
            f.problem("state", "invalid", message);
        }
        let description = f.string("description");
        if description.as_ref().is_some_and(|d| d.chars().count() > MAX_STATUS_DESCRIPTION) {
            let message = format!("description is too long (maximum is {MAX_STATUS_DESCRIPTION} characters)");
            f.problem("description", "custom", message);
        }
        let status = NewStatus {
            state,
            target_url: f.string("target_url"),
            log_url: f.string("log_url"),
            description,
            environment: f.string("environment"),
            environment_url: f.string("environment_url"),
            auto_inactive: f.boolean("auto_inactive"),
        };
        f.finish(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_follow_github() {
        let d = NewDeployment::parse(&json!({ "ref": "main" })).expect("valid");
        assert_eq!((d.task.as_str(), d.environment.as_str()), ("deploy", "production"));
        assert!(d.production_environment && !d.transient_environment);
        assert_eq!((d.auto_merge, d.required_contexts), (None, None));
        assert_eq!(d.payload, json!({}));
        let staging = NewDeployment::parse(&json!({ "ref": "main", "environment": "staging" })).expect("valid");
        assert!(!staging.production_environment);
    }

    #[test]
    fn deployment_problems_are_all_reported() {
        let problems = NewDeployment::parse(&json!({ "auto_merge": "no", "payload": 3 })).expect_err("invalid");
        let fields: Vec<_> = problems.iter().map(|p| (p.field, p.code)).collect();
        assert_eq!(fields, [("ref", "missing_field"), ("auto_merge", "invalid"), ("payload", "invalid")]);
        assert!(NewDeployment::parse(&json!([1])).is_err());
    }

    #[test]
    fn status_checks_state_and_description() {
        assert!(NewStatus::parse(&json!({ "state": "in_progress" })).is_ok());
        assert_eq!(NewStatus::parse(&json!({ "state": "done" })).expect_err("bad state")[0].field, "state");
        assert_eq!(NewStatus::parse(&json!({})).expect_err("no state")[0].code, "missing_field");
        let long = "é".repeat(141);
        let problems = NewStatus::parse(&json!({ "state": "success", "description": long })).expect_err("long");
        assert_eq!((problems[0].field, problems[0].code), ("description", "custom"));
        assert!(NewStatus::parse(&json!({ "state": "success", "description": "é".repeat(140) })).is_ok());
    }
}
