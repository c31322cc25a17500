//! A new task definition, made as `amazon-ecs-render-task-definition` users make one:
//! from the live definition (DescribeTaskDefinition) or a template file, with one
//! container's image set and environment variables merged in, and the fields ECS fills
//! in itself taken out, so RegisterTaskDefinition takes it back.

use serde_json::{Map, Value};

/// Fields DescribeTaskDefinition answers that RegisterTaskDefinition refuses: ECS sets
/// them on every revision.
pub const OUTPUT_ONLY: [&str; 9] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// What the new revision changes.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The container, by its name in the definition.
    pub container: &'a str,
    pub image: &'a str,
    /// Set in that container's `environment`: a name already there gets the new value.
    pub environment: &'a [(String, String)],
}

/// The containers of a task definition (or of a DescribeTaskDefinition answer), by name.
pub fn containers(definition: &Value) -> Vec<&str> {
    let inner = definition.get("taskDefinition").unwrap_or(definition);
    inner
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default()
}

/// The image of container `name` in a task definition (or a DescribeTaskDefinition answer).
pub fn image_of(definition: &Value, name: &str) -> Option<String> {
    let inner = definition.get("taskDefinition").unwrap_or(definition);
    inner
        .get("containerDefinitions")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?
        .get("image")?
        .as_str()
        .map(str::to_string)
}

/// The RegisterTaskDefinition request for `base` (a task definition, or a
/// DescribeTaskDefinition answer with `taskDefinition` and `tags`) changed by `change`.
/// The error says what is wrong with `base` and how to fix it.
pub fn render(base: &Value, change: &Change) -> Result<Value, String> {
    let (definition, tags) = match base.get("taskDefinition") {
        Some(inner) => (inner, base.get("tags")),
        None => (base, base.get("tags")),
    };
    let Some(definition) = definition.as_object() else {
        return Err("the task definition is not a JSON object".into());
    };
    let mut out: Map<String, Value> = definition
        .iter()
        .filter(|(k, _)| !OUTPUT_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if out.get("family").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("the task definition has no family; give it one, as RegisterTaskDefinition needs".into());
    }
    let Some(containers) = out.get_mut("containerDefinitions").and_then(Value::as_array_mut) else {
        return Err("the task definition has no containerDefinitions".into());
    };
    let names: Vec<String> =
        containers.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).map(str::to_string).collect();
    let Some(container) =
        containers.iter_mut().find(|c| c.get("name").and_then(Value::as_str) == Some(change.container))
    else {
        return Err(format!(
            "no container named '{}' in the task definition; its containers are: {}. Set container-name to one of them",
            change.container,
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    };
    let container = container.as_object_mut().ok_or("a container definition is not a JSON object")?;
    container.insert("image".into(), Value::String(change.image.to_string()));
    if !change.environment.is_empty() {
        let env = container.entry("environment").or_insert_with(|| Value::Array(Vec::new()));
        let env = env.as_array_mut().ok_or("the container's environment is not a list")?;
        for (name, value) in change.environment {
            let pair = serde_json::json!({ "name": name, "value": value });
            match env.iter_mut().find(|e| e.get("name").and_then(Value::as_str) == Some(name)) {
                Some(existing) => *existing = pair,
                None => env.push(pair),
            }
        }
    }
    // Tags are kept: ECS answers them beside the definition, and takes them with it.
    if let Some(tags) = tags.filter(|t| t.as_array().is_some_and(|t| !t.is_empty())) {
        out.insert("tags".into(), tags.clone());
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What DescribeTaskDefinition answers for the seeds' staging app, tags included.
    fn described() -> Value {
        json!({
            "taskDefinition": {
                "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:42",
                "family": "web",
                "revision": 42,
                "status": "ACTIVE",
                "requiresCompatibilities": ["FARGATE"],
                "compatibilities": ["EC2", "FARGATE"],
                "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"}],
                "registeredAt": "2026-12-01T10:00:00Z",
                "registeredBy": "arn:aws:iam::123456789012:role/deploy",
                "networkMode": "awsvpc",
                "cpu": "256",
                "memory": "512",
                "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
                "containerDefinitions": [
                    {"name": "web", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v1",
                     "portMappings": [{"containerPort": 8080}],
                     "environment": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "us-east-1"}]},
                    {"name": "log-router", "image": "amazon/aws-for-fluent-bit:stable"}
                ]
            },
            "tags": [{"key": "team", "value": "shop"}]
        })
    }

    fn change<'a>(container: &'a str, env: &'a [(String, String)]) -> Change<'a> {
        Change { container, image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v2", environment: env }
    }

    #[test]
    fn the_live_definition_becomes_the_next_revision_with_the_new_image_and_its_tags() {
        let env = [("LOG_LEVEL".to_string(), "debug".to_string()), ("GIT_SHA".to_string(), "abc123".to_string())];
        let out = render(&described(), &change("web", &env)).unwrap();
        for field in OUTPUT_ONLY {
            assert!(out.get(field).is_none(), "{field} is ECS's to set");
        }
        assert_eq!(out["family"], "web");
        assert_eq!(out["requiresCompatibilities"], json!(["FARGATE"]), "what the user set stays");
        let web = &out["containerDefinitions"][0];
        assert_eq!(web["image"], "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v2");
        assert_eq!(
            web["environment"],
            json!([{"name": "LOG_LEVEL", "value": "debug"}, {"name": "REGION", "value": "us-east-1"}, {"name": "GIT_SHA", "value": "abc123"}]),
            "a name already set gets the new value in place; a new one is added"
        );
        assert_eq!(
            out["containerDefinitions"][1]["image"], "amazon/aws-for-fluent-bit:stable",
            "the sidecar is untouched"
        );
        assert_eq!(out["tags"], json!([{"key": "team", "value": "shop"}]));
        // With SAFE_DEPLOY_ECS_SAMPLES=DIR the request is kept for `.ci/ecs-model-check`,
        // which validates it against botocore's model of RegisterTaskDefinition.
        if let Some(dir) = std::env::var_os("SAFE_DEPLOY_ECS_SAMPLES") {
            std::fs::create_dir_all(&dir).unwrap();
            let path = std::path::Path::new(&dir).join("RegisterTaskDefinition.json");
            std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
        }
    }

    #[test]
    fn a_template_file_renders_the_same_way() {
        let template = described()["taskDefinition"].clone();
        let out = render(&template, &change("web", &[])).unwrap();
        assert_eq!(out["containerDefinitions"][0]["image"], "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v2");
        assert!(out.get("tags").is_none(), "a template without tags adds none");
        assert!(out["containerDefinitions"][0]["environment"].as_array().is_some_and(|e| e.len() == 2));
    }

    #[test]
    fn a_container_that_is_not_there_is_named_with_the_ones_that_are() {
        let err = render(&described(), &change("api", &[])).unwrap_err();
        assert!(err.contains("no container named 'api'") && err.contains("web, log-router"), "{err}");
        let err = render(&json!({"family": "web", "containerDefinitions": []}), &change("web", &[])).unwrap_err();
        assert!(err.contains("its containers are: none"), "{err}");
    }

    #[test]
    fn what_register_task_definition_needs_is_checked() {
        assert!(render(&json!([1, 2]), &change("web", &[])).unwrap_err().contains("not a JSON object"));
        assert!(render(&json!({"containerDefinitions": []}), &change("web", &[])).unwrap_err().contains("no family"));
        assert!(render(&json!({"family": "web"}), &change("web", &[]))
            .unwrap_err()
            .contains("no containerDefinitions"));
        let bad_env = json!({"family": "web", "containerDefinitions": [{"name": "web", "environment": "x"}]});
        let env = [("A".to_string(), "1".to_string())];
        assert!(render(&bad_env, &change("web", &env)).unwrap_err().contains("not a list"));
    }
}
