//! The parts of a Hugging Face `config.json` every model shares: the architecture check on
//! reading and the fields transformers expects on writing.

use glimpse_media::untrusted::settings_from_json;

use crate::error::ModelError;

/// The `model_type` a `config.json` names, if any; refuses a file that is not a JSON object.
pub fn model_type(json: &[u8]) -> Result<Option<String>, ModelError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let probe: Probe = settings_from_json(json).map_err(|e| ModelError::config("config.json", e))?;
    Ok(probe.model_type)
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
            assert!(err.contains(&format!("config.json: the file holds {holds}, not an object")), "{json}: {err}");
        }
        let err = model_type(br#"{"model_type": 7}"#).unwrap_err().to_string();
        assert!(err.contains("invalid type: integer `7`") && !err.contains("Probe"), "{err}");
        assert_eq!(model_type(br#"{"model_type": "gpt2"}"#).unwrap().as_deref(), Some("gpt2"));
        assert_eq!(model_type(b"{}").unwrap(), None);
    }
}
