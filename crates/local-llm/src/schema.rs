//! The subset of JSON Schema the constrained decoder understands, read from OpenAI
//! function specs (`{"type":"function","function":{name, description, parameters}}`), the
//! shape `mana_ai_core::catalog::function_specs` produces.

use serde_json::Value;

/// Why a tool spec could not be used for constrained decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("tool spec is missing `function.name`")]
    MissingName,
    #[error("tool {tool:?}: unsupported schema at {path}: {reason}")]
    Unsupported {
        tool: String,
        path: String,
        reason: String,
    },
}

/// The JSON type of a value slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A string; `enum_values` empty means free text.
    String {
        enum_values: Vec<String>,
    },
    Number,
    Integer,
    Boolean,
    /// An array whose elements follow the boxed schema (`None`: free strings).
    Array(Box<Kind>),
    /// An object with declared properties (possibly none: emitted as `{}`).
    Object(Vec<Property>),
}

/// One declared key of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub required: bool,
    pub description: String,
    pub kind: Kind,
}

/// One offered tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    pub name: String,
    pub description: String,
    pub properties: Vec<Property>,
}

impl ToolSchema {
    /// Reads one OpenAI function spec.
    pub fn from_spec(spec: &Value) -> Result<Self, SchemaError> {
        let function = spec.get("function").unwrap_or(spec);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(SchemaError::MissingName)?
            .to_owned();
        let description = function
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let properties = match function.get("parameters") {
            Some(p) => object_properties(&name, "", p)?,
            None => Vec::new(),
        };
        Ok(Self {
            name,
            description,
            properties,
        })
    }

    /// Reads a list of specs, in order.
    pub fn from_specs(specs: &[Value]) -> Result<Vec<Self>, SchemaError> {
        specs.iter().map(Self::from_spec).collect()
    }
}

fn object_properties(tool: &str, path: &str, schema: &Value) -> Result<Vec<Property>, SchemaError> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let sub = format!("{path}{name}");
            out.push(Property {
                name: name.clone(),
                required: required.contains(&name.as_str()),
                description: p
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                kind: kind_of(tool, &sub, p)?,
            });
        }
    }
    Ok(out)
}

fn kind_of(tool: &str, path: &str, schema: &Value) -> Result<Kind, SchemaError> {
    let unsupported = |reason: &str| SchemaError::Unsupported {
        tool: tool.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    Ok(match ty {
        "string" => Kind::String {
            enum_values: schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
        "number" => Kind::Number,
        "integer" => Kind::Integer,
        "boolean" => Kind::Boolean,
        "array" => {
            let items = match schema.get("items") {
                Some(items) => kind_of(tool, &format!("{path}[]"), items)?,
                None => Kind::String {
                    enum_values: Vec::new(),
                },
            };
            Kind::Array(Box::new(items))
        }
        "object" => Kind::Object(object_properties(tool, &format!("{path}."), schema)?),
        other => return Err(unsupported(&format!("type {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mana_ai_core::catalog::{function_specs, Catalog};

    #[test]
    fn every_builtin_tool_is_supported() {
        let cat = Catalog::builtin();
        let tools: Vec<_> = cat.tools().iter().collect();
        let specs = function_specs(&tools);
        let schemas = ToolSchema::from_specs(&specs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schemas.len(), cat.len());
        for (s, t) in schemas.iter().zip(cat.tools()) {
            assert_eq!(s.name, t.name);
            assert_eq!(s.properties.len(), t.parameters.len());
            for (p, q) in s.properties.iter().zip(&t.parameters) {
                assert_eq!((p.name.as_str(), p.required), (q.name.as_str(), q.required));
            }
        }
    }

    #[test]
    fn reads_enum_and_nested() {
        let spec = serde_json::json!({"type":"function","function":{"name":"t","description":"d",
            "parameters":{"type":"object","required":["a"],"properties":{
              "a":{"type":"string","enum":["x","y"]},
              "b":{"type":"array","items":{"type":"object","properties":{"q":{"type":"integer"}},"required":["q"]}}}}}});
        let s = ToolSchema::from_spec(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.properties[0].kind,
            Kind::String {
                enum_values: vec!["x".into(), "y".into()]
            }
        );
        assert!(s.properties[0].required && !s.properties[1].required);
        let Kind::Array(items) = &s.properties[1].kind else {
            panic!("array expected")
        };
        let Kind::Object(props) = items.as_ref() else {
            panic!("object expected")
        };
        assert_eq!(props[0].kind, Kind::Integer);
        assert!(props[0].required);
    }

    #[test]
    fn rejects_unknown_type_and_missing_name() {
        let bad = serde_json::json!({"function":{"name":"t","parameters":{"properties":{"a":{"type":"null"}}}}});
        assert!(matches!(
            ToolSchema::from_spec(&bad),
            Err(SchemaError::Unsupported { .. })
        ));
        let nameless = serde_json::json!({"function":{"parameters":{}}});
        assert_eq!(
            ToolSchema::from_spec(&nameless),
            Err(SchemaError::MissingName)
        );
    }
}
