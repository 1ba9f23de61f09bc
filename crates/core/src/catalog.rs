//! The AI tool catalog as data: every tool the planner may know about, its module, its
//! default policy and its typed parameters, plus the conversion into OpenAI
//! function-calling specs.
//!
//! The catalog lives in `catalog/tools.json` (our own file, compiled into the binary) and is
//! parsed and validated once by [`Catalog::builtin`]. [`Catalog::from_json`] applies the same
//! validation to any other catalog text (tests, future overrides).
//!
//! Deliberate improvement over the original converter: `array` and `object` parameters may
//! declare a nested schema (`items` / `properties`), which [`tool_to_function_spec`] emits and
//! [`validate_call`] checks. Nesting is bounded: an `items` schema may declare `properties`,
//! but a nested property never declares its own `items` or `properties`.

mod lang;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lang::Lang;

pub use validate::{validate_call, CallRejection};

/// The catalog text compiled into the binary.
const BUILTIN_JSON: &str = include_str!("catalog/tools.json");
/// The German texts of the built-in catalog (see [`lang`]).
const BUILTIN_DE_JSON: &str = include_str!("catalog/tools.de.json");

/// How a tool may be used by an AI actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDecision {
    /// Run right away.
    Auto,
    /// Record as a proposal; this is what selects the server subset.
    Propose,
    /// Never offered, never run.
    Deny,
}

impl PolicyDecision {
    /// Parses the exact lowercase wire string (`auto`, `propose`, `deny`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "propose" => Some(Self::Propose),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    /// The lowercase wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Propose => "propose",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for PolicyDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type of a parameter (case-sensitive whitelist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    /// Parses a catalog type string; `None` for anything outside the whitelist.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "string" => Some(Self::String),
            "number" => Some(Self::Number),
            "integer" => Some(Self::Integer),
            "boolean" => Some(Self::Boolean),
            "array" => Some(Self::Array),
            "object" => Some(Self::Object),
            _ => None,
        }
    }

    /// The JSON Schema type name (identical to the catalog name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named parameter of a tool (or one declared property of a nested object).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub required: bool,
    /// Never empty.
    pub description: String,
    /// The German description, when the catalog has one (the built-in one always does).
    pub description_de: Option<String>,
    /// Allowed values; only ever non-empty on `string` parameters. Empty means "no enum".
    pub enum_values: Vec<String>,
    /// Element schema; only on `array` parameters, only at the top level.
    pub items: Option<Box<ItemSchema>>,
    /// Declared keys; only on `object` parameters, only at the top level. `Some(vec![])`
    /// declares an open object whose keys are not described.
    pub properties: Option<Vec<Param>>,
}

/// The schema of the elements of an `array` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ItemSchema {
    pub ty: ParamType,
    /// Optional; emitted only when present.
    pub description: Option<String>,
    /// The German description (present exactly when `description` is, in the built-in
    /// catalog).
    pub description_de: Option<String>,
    /// Allowed values; only ever non-empty when `ty` is `string`.
    pub enum_values: Vec<String>,
    /// Declared keys of object elements (flat: no further nesting).
    pub properties: Option<Vec<Param>>,
}

/// One catalog tool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tool {
    /// Unique, matches `^[a-z_]+$`.
    pub name: String,
    /// Module id, e.g. `todo`, `news-research`.
    pub module: String,
    /// Text for the LLM; never empty.
    pub description: String,
    /// The German text for the LLM (the built-in catalog has one for every tool).
    pub description_de: Option<String>,
    pub default_policy: PolicyDecision,
    /// In declaration order; names unique.
    pub parameters: Vec<Param>,
}

impl Tool {
    /// The parameter with this name, if declared.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// The description in `lang` (English when there is no German text).
    pub fn description_in(&self, lang: Lang) -> &str {
        in_lang(&self.description, self.description_de.as_deref(), lang)
    }
}

impl Param {
    /// The description in `lang` (English when there is no German text).
    pub fn description_in(&self, lang: Lang) -> &str {
        in_lang(&self.description, self.description_de.as_deref(), lang)
    }
}

fn in_lang<'a>(en: &'a str, de: Option<&'a str>, lang: Lang) -> &'a str {
    match (lang, de) {
        (Lang::De, Some(de)) => de,
        _ => en,
    }
}

/// Why a catalog text was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("tool catalog is not valid JSON for the catalog shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid tool name in tool catalog: {0:?} (must match ^[a-z_]+$)")]
    InvalidToolName(String),
    #[error("duplicate tool name in tool catalog: {0:?}")]
    DuplicateTool(String),
    #[error("tool {0:?} has an empty module id")]
    EmptyModule(String),
    #[error("invalid policy {value:?} on tool {tool:?} (expected auto, propose or deny)")]
    InvalidPolicy { tool: String, value: String },
    #[error("Unsupported parameter type in tool catalog: \"{0}\"")]
    UnsupportedType(String),
    #[error("German catalog texts: {0}")]
    German(String),
    #[error("empty description at {0}")]
    EmptyDescription(String),
    #[error("empty parameter name in {0}")]
    EmptyParamName(String),
    #[error("duplicate parameter name at {0}")]
    DuplicateParam(String),
    #[error("enum on a non-string parameter at {0}")]
    EnumOnNonString(String),
    #[error("`items` is only allowed on array parameters (at {0})")]
    MisplacedItems(String),
    #[error("`properties` is only allowed on object parameters (at {0})")]
    MisplacedProperties(String),
    #[error(
        "nested schema too deep at {0} (nested properties cannot declare items or properties)"
    )]
    TooDeep(String),
}

/// A validated, immutable tool catalog in catalog order.
#[derive(Debug, Clone)]
pub struct Catalog {
    tools: Vec<Tool>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// The built-in catalog (`catalog/tools.json`), parsed once.
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: OnceLock<Catalog> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            match Catalog::from_json_with_german(BUILTIN_JSON, BUILTIN_DE_JSON) {
                Ok(catalog) => catalog,
                // The input is a compile-time constant; the test `builtin_catalog_counts` parses
                // it, so this branch is unreachable in any build that passed the test suite.
                Err(e) => panic!("built-in tool catalog is invalid: {e}"),
            }
        })
    }

    /// Parses and fully validates a catalog: a JSON array of tool objects
    /// `{name, module, defaultPolicy, description, parameters:[{name, type, required,
    /// description, enum?, items?, properties?}]}`. Unknown keys are rejected.
    pub fn from_json(text: &str) -> Result<Catalog, CatalogError> {
        let raw: Vec<RawTool> = serde_json::from_str(text)?;
        let mut tools = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for rt in raw {
            let tool = rt.into_tool()?;
            if by_name.insert(tool.name.clone(), tools.len()).is_some() {
                return Err(CatalogError::DuplicateTool(tool.name));
            }
            tools.push(tool);
        }
        Ok(Catalog { tools, by_name })
    }

    /// [`Catalog::from_json`] plus the German overlay `german` (see the `lang` module:
    /// it must cover every tool and described parameter exactly).
    pub fn from_json_with_german(text: &str, german: &str) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::from_json(text)?;
        lang::apply_german(&mut catalog.tools, german)?;
        Ok(catalog)
    }

    /// All tools in catalog order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Looks a tool up by exact name.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).and_then(|&i| self.tools.get(i))
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// True when the catalog has no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Module ids in order of first appearance.
    pub fn modules(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.tools {
            if !out.contains(&t.module.as_str()) {
                out.push(&t.module);
            }
        }
        out
    }

    /// The server subset: every `propose` tool, in catalog order. The background planner
    /// can only record write calls for the client to apply, so `auto` tools are withheld.
    pub fn server_tools(&self) -> Vec<&Tool> {
        self.tools
            .iter()
            .filter(|t| t.default_policy == PolicyDecision::Propose)
            .collect()
    }

    /// Validates one model-issued call against `offered`, using this catalog to tell an
    /// unknown name from a known but not offered one. See [`validate_call`].
    pub fn validate_call(
        &self,
        offered: &[&Tool],
        name: &str,
        raw_arguments: &str,
    ) -> Result<Map<String, Value>, CallRejection> {
        validate::validate_in(self, offered, name, raw_arguments)
    }
}

/// Converts a tool into an OpenAI `tools[]` entry:
/// `{type:"function", function:{name, description, parameters:{type:"object", properties,
/// required}}}`. Each property has keys in the order `type`, `description`, `enum` (only when
/// non-empty), then `items` / `properties` (+ nested `required` when non-empty) when declared.
/// Never emits `module`, `defaultPolicy`, defaults or `additionalProperties`.
pub fn tool_to_function_spec(tool: &Tool) -> Value {
    tool_to_function_spec_in(tool, Lang::En)
}

/// [`tool_to_function_spec`] with the descriptions in `lang`.
pub fn tool_to_function_spec_in(tool: &Tool, lang: Lang) -> Value {
    let (properties, required) = object_schema_parts(&tool.parameters, lang);
    let mut parameters = Map::new();
    parameters.insert("type".into(), Value::from("object"));
    parameters.insert("properties".into(), Value::Object(properties));
    parameters.insert("required".into(), Value::from(required));

    let mut function = Map::new();
    function.insert("name".into(), Value::from(tool.name.as_str()));
    function.insert("description".into(), Value::from(tool.description_in(lang)));
    function.insert("parameters".into(), Value::Object(parameters));

    let mut spec = Map::new();
    spec.insert("type".into(), Value::from("function"));
    spec.insert("function".into(), Value::Object(function));
    Value::Object(spec)
}

/// [`tool_to_function_spec`] over a list, same length and order.
pub fn function_specs(tools: &[&Tool]) -> Vec<Value> {
    function_specs_in(tools, Lang::En)
}

/// [`function_specs`] with the descriptions in `lang`.
pub fn function_specs_in(tools: &[&Tool], lang: Lang) -> Vec<Value> {
    tools
        .iter()
        .map(|t| tool_to_function_spec_in(t, lang))
        .collect()
}

fn object_schema_parts(params: &[Param], lang: Lang) -> (Map<String, Value>, Vec<Value>) {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in params {
        properties.insert(p.name.clone(), param_schema(p, lang));
        if p.required {
            required.push(Value::from(p.name.as_str()));
        }
    }
    (properties, required)
}

fn param_schema(p: &Param, lang: Lang) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), Value::from(p.ty.as_str()));
    m.insert("description".into(), Value::from(p.description_in(lang)));
    push_enum(&mut m, &p.enum_values);
    if let Some(items) = &p.items {
        m.insert("items".into(), item_schema(items, lang));
    }
    if let Some(props) = &p.properties {
        push_properties(&mut m, props, lang);
    }
    Value::Object(m)
}

fn item_schema(i: &ItemSchema, lang: Lang) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), Value::from(i.ty.as_str()));
    if let Some(d) = &i.description {
        let text = in_lang(d, i.description_de.as_deref(), lang);
        m.insert("description".into(), Value::from(text));
    }
    push_enum(&mut m, &i.enum_values);
    if let Some(props) = &i.properties {
        push_properties(&mut m, props, lang);
    }
    Value::Object(m)
}

fn push_enum(m: &mut Map<String, Value>, values: &[String]) {
    if !values.is_empty() {
        m.insert("enum".into(), Value::from(values.to_vec()));
    }
}

fn push_properties(m: &mut Map<String, Value>, props: &[Param], lang: Lang) {
    let (properties, required) = object_schema_parts(props, lang);
    m.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        m.insert("required".into(), Value::from(required));
    }
}

// ---- parsing and validation -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTool {
    name: String,
    module: String,
    default_policy: String,
    description: String,
    parameters: Vec<RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    required: bool,
    description: String,
    #[serde(default, rename = "enum")]
    enum_values: Option<Vec<String>>,
    #[serde(default)]
    items: Option<RawItems>,
    #[serde(default)]
    properties: Option<Vec<RawParam>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItems {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "enum")]
    enum_values: Option<Vec<String>>,
    #[serde(default)]
    properties: Option<Vec<RawParam>>,
}

fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn parse_type(s: &str) -> Result<ParamType, CatalogError> {
    ParamType::parse(s).ok_or_else(|| CatalogError::UnsupportedType(s.to_owned()))
}

fn check_enum(
    ty: ParamType,
    values: Option<Vec<String>>,
    path: &str,
) -> Result<Vec<String>, CatalogError> {
    let values = values.unwrap_or_default();
    if !values.is_empty() && ty != ParamType::String {
        return Err(CatalogError::EnumOnNonString(path.to_owned()));
    }
    Ok(values)
}

impl RawTool {
    fn into_tool(self) -> Result<Tool, CatalogError> {
        if !is_valid_tool_name(&self.name) {
            return Err(CatalogError::InvalidToolName(self.name));
        }
        if self.module.trim().is_empty() {
            return Err(CatalogError::EmptyModule(self.name));
        }
        let default_policy = PolicyDecision::parse(&self.default_policy).ok_or_else(|| {
            CatalogError::InvalidPolicy {
                tool: self.name.clone(),
                value: self.default_policy.clone(),
            }
        })?;
        if self.description.trim().is_empty() {
            return Err(CatalogError::EmptyDescription(self.name));
        }
        let parameters = convert_params(self.parameters, &self.name, true)?;
        Ok(Tool {
            name: self.name,
            module: self.module,
            description: self.description,
            description_de: None,
            default_policy,
            parameters,
        })
    }
}

/// Converts a parameter list; `top_level` false means nested properties (must be flat).
fn convert_params(
    raw: Vec<RawParam>,
    owner: &str,
    top_level: bool,
) -> Result<Vec<Param>, CatalogError> {
    let mut out: Vec<Param> = Vec::with_capacity(raw.len());
    for rp in raw {
        if rp.name.is_empty() {
            return Err(CatalogError::EmptyParamName(owner.to_owned()));
        }
        let path = format!("{owner}.{}", rp.name);
        if out.iter().any(|p| p.name == rp.name) {
            return Err(CatalogError::DuplicateParam(path));
        }
        let ty = parse_type(&rp.ty)?;
        if rp.description.trim().is_empty() {
            return Err(CatalogError::EmptyDescription(path));
        }
        let enum_values = check_enum(ty, rp.enum_values, &path)?;
        if !top_level && (rp.items.is_some() || rp.properties.is_some()) {
            return Err(CatalogError::TooDeep(path));
        }
        let items = match rp.items {
            None => None,
            Some(_) if ty != ParamType::Array => return Err(CatalogError::MisplacedItems(path)),
            Some(ri) => Some(Box::new(convert_items(ri, &format!("{path}[]"))?)),
        };
        let properties = match rp.properties {
            None => None,
            Some(_) if ty != ParamType::Object => {
                return Err(CatalogError::MisplacedProperties(path))
            }
            Some(rps) => Some(convert_params(rps, &path, false)?),
        };
        out.push(Param {
            name: rp.name,
            ty,
            required: rp.required,
            description: rp.description,
            description_de: None,
            enum_values,
            items,
            properties,
        });
    }
    Ok(out)
}

fn convert_items(ri: RawItems, path: &str) -> Result<ItemSchema, CatalogError> {
    let ty = parse_type(&ri.ty)?;
    if let Some(d) = &ri.description {
        if d.trim().is_empty() {
            return Err(CatalogError::EmptyDescription(path.to_owned()));
        }
    }
    let enum_values = check_enum(ty, ri.enum_values, path)?;
    let properties = match ri.properties {
        None => None,
        Some(_) if ty != ParamType::Object => {
            return Err(CatalogError::MisplacedProperties(path.to_owned()))
        }
        Some(rps) => Some(convert_params(rps, path, false)?),
    };
    Ok(ItemSchema {
        ty,
        description: ri.description,
        description_de: None,
        enum_values,
        properties,
    })
}
