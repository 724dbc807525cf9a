//! The parts of a Hugging Face `config.json` every model shares: the architecture check on
//! reading and the fields transformers expects on writing.

use crate::error::ModelError;

/// The `model_type` a `config.json` names, if any.
pub fn model_type(json: &[u8]) -> Result<Option<String>, ModelError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(json).map_err(|e| ModelError::config("config.json", e))?;
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
