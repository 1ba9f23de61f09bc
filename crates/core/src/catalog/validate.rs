//! Validation of one model-issued tool call (name + raw JSON arguments) against the tools
//! that were offered to the model.
//!
//! Rules (the original recorded any call unchecked; this closes that gap):
//! - the name must be one of the offered tools; a catalog tool that was not offered (for
//!   example denied by the agent policy) is [`CallRejection::NotOffered`], anything else
//!   [`CallRejection::UnknownTool`];
//! - empty or whitespace-only arguments count as `{}` (some providers send `""` for
//!   zero-parameter calls); anything else must parse as a JSON object;
//! - top-level keys not declared by the tool are **rejected** ([`CallRejection::UnknownParam`])
//!   so a misspelt parameter never silently disappears;
//! - `null` for an optional parameter means "absent" and is dropped from the result; `null`
//!   for a required parameter is [`CallRejection::MissingRequired`];
//! - types are checked exactly: `"12"` is not a number, `1.5` is not an integer;
//! - nested schemas are checked one level deep: array elements against `items`, and declared
//!   keys of nested objects against `properties` (required, type, enum). Undeclared keys inside
//!   nested objects are allowed, matching the emitted JSON Schema, which has no
//!   `additionalProperties: false`.
//!
//! Checks run in a fixed order: provided keys in the order given, then missing required
//! parameters in declaration order; the first failure is returned.

use std::fmt;

use serde_json::{Map, Value};

use super::{Catalog, ItemSchema, Param, ParamType, Tool};

/// Why a tool call was refused. `Display` is a short English message meant to be sent back to
/// the model as the tool result so it can correct the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRejection {
    /// The name is not in the catalog at all.
    UnknownTool(String),
    /// The tool exists in the catalog but was not offered (or is denied) for this run.
    NotOffered(String),
    /// The arguments are not valid JSON; carries the parser's message.
    InvalidJson(String),
    /// The arguments are valid JSON but not an object.
    NotAnObject,
    /// A required parameter is absent or `null`; carries the parameter path.
    MissingRequired(String),
    /// A value has the wrong JSON type. `found` describes what was sent, e.g.
    /// `"a numeric string"`.
    WrongType {
        param: String,
        expected: ParamType,
        found: &'static str,
    },
    /// A string is not one of the allowed enum values.
    NotInEnum { param: String, allowed: Vec<String> },
    /// A top-level key the tool does not declare.
    UnknownParam(String),
}

impl CallRejection {
    /// A bounded, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownTool(_) => "unknown_tool",
            Self::NotOffered(_) => "not_offered",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingRequired(_) => "missing_required",
            Self::WrongType { .. } => "wrong_type",
            Self::NotInEnum { .. } => "not_in_enum",
            Self::UnknownParam(_) => "unknown_param",
        }
    }
}

fn article(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "a string",
        ParamType::Number => "a number",
        ParamType::Integer => "an integer",
        ParamType::Boolean => "a boolean (true or false)",
        ParamType::Array => "an array",
        ParamType::Object => "an object",
    }
}

impl fmt::Display for CallRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTool(name) => write!(
                f,
                "Unknown tool \"{name}\". Call only the tools offered in this request."
            ),
            Self::NotOffered(name) => write!(
                f,
                "Tool \"{name}\" is not available in this run. Call only the tools offered in this request."
            ),
            Self::InvalidJson(err) => write!(
                f,
                "The arguments are not valid JSON ({err}). Send the arguments as one JSON object."
            ),
            Self::NotAnObject => f.write_str(
                "The arguments must be a JSON object that maps parameter names to values.",
            ),
            Self::MissingRequired(param) => {
                write!(f, "Required parameter \"{param}\" is missing.")
            }
            Self::WrongType {
                param,
                expected,
                found,
            } => {
                write!(
                    f,
                    "Parameter \"{param}\" must be {}, but {found} was given.",
                    article(*expected)
                )?;
                if *found == NUMERIC_STRING {
                    f.write_str(" Send numbers as JSON numbers without quotes, e.g. 12.5 instead of \"12.5\".")?;
                }
                Ok(())
            }
            Self::NotInEnum { param, allowed } => {
                write!(f, "Parameter \"{param}\" must be one of: ")?;
                for (i, v) in allowed.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{v}\"")?;
                }
                f.write_str(".")
            }
            Self::UnknownParam(param) => write!(
                f,
                "Unknown parameter \"{param}\". Use only the parameters declared for this tool."
            ),
        }
    }
}

impl std::error::Error for CallRejection {}

const NUMERIC_STRING: &str = "a numeric string";

/// Validates one call against the offered tools, using the built-in catalog to tell
/// [`CallRejection::UnknownTool`] from [`CallRejection::NotOffered`]. On success returns the
/// argument object with `null`-valued optional parameters removed.
pub fn validate_call(
    offered: &[&Tool],
    name: &str,
    raw_arguments: &str,
) -> Result<Map<String, Value>, CallRejection> {
    validate_in(Catalog::builtin(), offered, name, raw_arguments)
}

pub(super) fn validate_in(
    catalog: &Catalog,
    offered: &[&Tool],
    name: &str,
    raw_arguments: &str,
) -> Result<Map<String, Value>, CallRejection> {
    let Some(tool) = offered.iter().copied().find(|t| t.name == name) else {
        return Err(if catalog.get(name).is_some() {
            CallRejection::NotOffered(name.to_owned())
        } else {
            CallRejection::UnknownTool(name.to_owned())
        });
    };
    let args = if raw_arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str::<Value>(raw_arguments)
            .map_err(|e| CallRejection::InvalidJson(e.to_string()))?
    };
    let Value::Object(obj) = args else {
        return Err(CallRejection::NotAnObject);
    };
    check_object(obj, &tool.parameters, "", true)
}

/// Checks an object against declared params. `strict` rejects undeclared keys.
fn check_object(
    obj: Map<String, Value>,
    params: &[Param],
    prefix: &str,
    strict: bool,
) -> Result<Map<String, Value>, CallRejection> {
    let mut out = Map::with_capacity(obj.len());
    for (key, value) in obj {
        let path = format!("{prefix}{key}");
        let Some(param) = params.iter().find(|p| p.name == key) else {
            if strict {
                return Err(CallRejection::UnknownParam(path));
            }
            out.insert(key, value);
            continue;
        };
        if value.is_null() {
            if param.required {
                return Err(CallRejection::MissingRequired(path));
            }
            continue;
        }
        let value = check_param(value, param, &path)?;
        out.insert(key, value);
    }
    if let Some(missing) = params
        .iter()
        .find(|p| p.required && !out.contains_key(&p.name))
    {
        return Err(CallRejection::MissingRequired(format!(
            "{prefix}{}",
            missing.name
        )));
    }
    Ok(out)
}

fn check_param(value: Value, param: &Param, path: &str) -> Result<Value, CallRejection> {
    check_scalar(&value, param.ty, &param.enum_values, path)?;
    match value {
        Value::Array(elems) => match &param.items {
            Some(items) => check_array(elems, items, path),
            None => Ok(Value::Array(elems)),
        },
        Value::Object(obj) => match &param.properties {
            Some(props) => Ok(Value::Object(check_object(
                obj,
                props,
                &format!("{path}."),
                false,
            )?)),
            None => Ok(Value::Object(obj)),
        },
        other => Ok(other),
    }
}

fn check_array(elems: Vec<Value>, items: &ItemSchema, path: &str) -> Result<Value, CallRejection> {
    let mut out = Vec::with_capacity(elems.len());
    for (i, elem) in elems.into_iter().enumerate() {
        let elem_path = format!("{path}[{i}]");
        check_scalar(&elem, items.ty, &items.enum_values, &elem_path)?;
        let elem = match (elem, &items.properties) {
            (Value::Object(obj), Some(props)) => {
                Value::Object(check_object(obj, props, &format!("{elem_path}."), false)?)
            }
            (other, _) => other,
        };
        out.push(elem);
    }
    Ok(Value::Array(out))
}

/// Checks the JSON type of `value` and, for strings, the enum.
fn check_scalar(
    value: &Value,
    ty: ParamType,
    enum_values: &[String],
    path: &str,
) -> Result<(), CallRejection> {
    let ok = match (ty, value) {
        (ParamType::String, Value::String(_)) => true,
        (ParamType::Number, Value::Number(_)) => true,
        (ParamType::Integer, Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        (ParamType::Boolean, Value::Bool(_)) => true,
        (ParamType::Array, Value::Array(_)) => true,
        (ParamType::Object, Value::Object(_)) => true,
        _ => false,
    };
    if !ok {
        return Err(CallRejection::WrongType {
            param: path.to_owned(),
            expected: ty,
            found: describe(value),
        });
    }
    if let Value::String(s) = value {
        if !enum_values.is_empty() && !enum_values.iter().any(|v| v == s) {
            return Err(CallRejection::NotInEnum {
                param: path.to_owned(),
                allowed: enum_values.to_vec(),
            });
        }
    }
    Ok(())
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => NUMERIC_STRING,
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
