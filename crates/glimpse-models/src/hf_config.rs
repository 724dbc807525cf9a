//! The parts of a Hugging Face `config.json` every model shares: the architecture check on
//! reading and the fields transformers expects on writing.

use crate::error::ModelError;

/// The `model_type` a `config.json` names, if any; refuses a file that is not a JSON object.
pub fn model_type(json: &[u8]) -> Result<Option<String>, ModelError> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| ModelError::config("config.json", e))?;
    let Some(fields) = value.as_object() else {
        return Err(ModelError::InvalidConfig(format!(
            "config.json holds {}, not an object of settings; the file is damaged or not a model's config",
            json_kind(&value)
        )));
    };
    match fields.get("model_type") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(name)) => Ok(Some(name.clone())),
        Some(other) => Err(ModelError::InvalidConfig(format!("model_type is {}, not a name", json_kind(other)))),
    }
}

/// What a JSON value is, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Refuses a `config.json` written for another architecture, before serde reports a missing field.
pub fn check_model_type(json: &[u8], expected: &str, what: &str) -> Result<(), ModelError> {
    match model_type(json)? {
        Some(found) if found != expected => Err(ModelError::InvalidConfig(format!(
            "model_type is \"{found}\", but {what} checkpoint (model_type \"{expected}\") is needed here"
        ))),
        _ => Ok(()),
    }
}

/// A config serialised with the `model_type` and `architectures` fields transformers expects.
pub fn hf_config_json(config: &impl serde::Serialize, model_type: &str, architecture: &str) -> String {
    let mut value = serde_json::to_value(config).expect("configs serialise");
    value["model_type"] = model_type.into();
    value["architectures"] = serde_json::json!([architecture]);
    serde_json::to_string_pretty(&value).expect("values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_are_not_objects_are_refused_by_what_they_hold() {
        for (json, holds) in [("[]", "an array"), ("1", "a number"), ("null", "null"), ("\"gpt2\"", "a string")] {
            let err = model_type(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(&format!("config.json holds {holds}, not an object")), "{json}: {err}");
        }
        let err = model_type(br#"{"model_type": 7}"#).unwrap_err().to_string();
        assert!(err.contains("model_type is a number"), "{err}");
        assert_eq!(model_type(br#"{"model_type": "gpt2"}"#).unwrap().as_deref(), Some("gpt2"));
        assert_eq!(model_type(b"{}").unwrap(), None);
    }
}
