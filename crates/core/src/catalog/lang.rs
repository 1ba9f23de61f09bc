//! The German texts of the catalog: `catalog/tools.de.json`, an overlay keyed by tool name
//! with the tool's description and one description per parameter path (`name`,
//! `name.key` for a declared object key, `name[]` for an array's element description,
//! `name[].key` for a key of object elements). The overlay must cover the catalog exactly:
//! every tool and every described parameter, nothing else, no empty text.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{CatalogError, Param, Tool};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolTexts {
    description: String,
    parameters: BTreeMap<String, String>,
}

/// Sets the German texts of `tools` from the overlay `text` (see the module docs).
pub(super) fn apply_german(tools: &mut [Tool], text: &str) -> Result<(), CatalogError> {
    let mut overlay: BTreeMap<String, ToolTexts> = serde_json::from_str(text)?;
    for tool in tools.iter_mut() {
        let texts = overlay.remove(&tool.name).ok_or_else(|| {
            CatalogError::German(format!("no German text for tool {}", tool.name))
        })?;
        tool.description_de = Some(non_empty(texts.description, &tool.name)?);
        let mut params = texts.parameters;
        set_params(&mut tool.parameters, &tool.name, "", &mut params)?;
        if let Some(extra) = params.keys().next() {
            return Err(CatalogError::German(format!(
                "German text for unknown parameter {}.{extra}",
                tool.name
            )));
        }
    }
    if let Some(extra) = overlay.keys().next() {
        return Err(CatalogError::German(format!(
            "German text for unknown tool {extra}"
        )));
    }
    Ok(())
}

fn non_empty(text: String, at: &str) -> Result<String, CatalogError> {
    if text.trim().is_empty() {
        return Err(CatalogError::German(format!("empty German text at {at}")));
    }
    Ok(text)
}

fn take(
    texts: &mut BTreeMap<String, String>,
    tool: &str,
    path: &str,
) -> Result<String, CatalogError> {
    let text = texts
        .remove(path)
        .ok_or_else(|| CatalogError::German(format!("no German text for {tool}.{path}")))?;
    non_empty(text, &format!("{tool}.{path}"))
}

fn set_params(
    params: &mut [Param],
    tool: &str,
    prefix: &str,
    texts: &mut BTreeMap<String, String>,
) -> Result<(), CatalogError> {
    for p in params {
        let path = format!("{prefix}{}", p.name);
        p.description_de = Some(take(texts, tool, &path)?);
        if let Some(props) = &mut p.properties {
            set_params(props, tool, &format!("{path}."), texts)?;
        }
        if let Some(items) = &mut p.items {
            if items.description.is_some() {
                items.description_de = Some(take(texts, tool, &format!("{path}[]"))?);
            }
            if let Some(props) = &mut items.properties {
                set_params(props, tool, &format!("{path}[]."), texts)?;
            }
        }
    }
    Ok(())
}
