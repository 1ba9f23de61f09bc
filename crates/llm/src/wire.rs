//! JSON wire format of the OpenAI-compatible chat-completions endpoint.
//!
//! Pure functions: encode a [`ChatRequest`] into the exact request body (key order
//! matters and is fixed by the field order of the private wire structs), decode a 2xx
//! body into a [`ChatResponse`], and turn a non-2xx body into [`LlmError::Provider`].

use mana_ai_core::chat::{ChatMessage, ChatRequest, ChatResponse, LlmError, ToolCall, Usage};
use serde::Serialize;
use serde_json::Value;

/// How many characters of a provider's error text are kept.
pub(crate) const ERROR_MESSAGE_CHARS: usize = 500;
/// Longest provider `kind` kept as-is; longer or odd kinds become `unknown`.
const MAX_KIND_CHARS: usize = 40;

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    tools: &'a [Value],
    tool_choice: &'static str,
    temperature: f32,
    /// The completion bound; absent when the request sets none.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// Always present; `None` is sent as `null`.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    /// The raw JSON text we hold, sent verbatim as a string.
    arguments: &'a str,
}

fn wire_message(message: &ChatMessage) -> WireMessage<'_> {
    WireMessage {
        role: message.role.as_str(),
        content: message.content.as_deref(),
        tool_call_id: message.tool_call_id.as_deref().filter(|id| !id.is_empty()),
        tool_calls: message
            .tool_calls
            .iter()
            .map(|call| WireToolCall {
                id: &call.id,
                kind: "function",
                function: WireFunction {
                    name: &call.name,
                    arguments: &call.arguments,
                },
            })
            .collect(),
    }
}

/// Encodes the request body. An empty or absent model falls back to `default_model`;
/// an absent or non-finite temperature falls back to `default_temperature` (so `0.0`
/// is kept).
pub(crate) fn encode_request(
    request: &ChatRequest,
    default_model: &str,
    default_temperature: f32,
) -> Result<Vec<u8>, serde_json::Error> {
    let model = request
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(default_model);
    let temperature = request
        .temperature
        .filter(|t| t.is_finite())
        .unwrap_or(default_temperature);
    let body = WireRequest {
        model,
        messages: request.messages.iter().map(wire_message).collect(),
        tools: &request.tools,
        tool_choice: "auto",
        temperature,
        max_tokens: request.max_tokens,
        stream: false,
    };
    serde_json::to_vec(&body)
}

/// Decodes a 2xx chat-completions body. A body without choices that carries an error
/// object (`{"error":…}` or `{"detail":…}`, as some gateways answer with status 200) is
/// the provider error it describes, with status 200.
pub(crate) fn decode_response(body: &[u8]) -> Result<ChatResponse, LlmError> {
    let data: Value = serde_json::from_slice(body)
        .map_err(|e| LlmError::InvalidResponse(format!("body is not JSON: {e}")))?;
    if data.get("choices").is_none()
        && (data.get("error").is_some() || data.get("detail").is_some())
    {
        return Err(decode_error(
            200,
            Some("error object in a 200 answer"),
            body,
        ));
    }
    let choice = data
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .filter(|choice| choice.is_object())
        .ok_or_else(|| LlmError::InvalidResponse("response had no choices".to_owned()))?;
    let message = choice.get("message");
    let content = decode_content(message.and_then(|m| m.get("content")))?;
    let tool_calls = match message.and_then(|m| m.get("tool_calls")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(raw)) => decode_tool_calls(raw)?,
        Some(_) => {
            return Err(LlmError::InvalidResponse(
                "message.tool_calls is not an array".to_owned(),
            ))
        }
    };
    let finish_reason =
        normalise_finish_reason(choice.get("finish_reason").and_then(Value::as_str));
    Ok(ChatResponse {
        content,
        tool_calls,
        finish_reason: Some(finish_reason.to_owned()),
        usage: decode_usage(data.get("usage")),
    })
}

/// `content` may be a string, `null`/absent, or a list of text parts (joined).
fn decode_content(raw: Option<&Value>) -> Result<Option<String>, LlmError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("text").and_then(Value::as_str) {
                    Some(piece) => text.push_str(piece),
                    None => {
                        return Err(LlmError::InvalidResponse(
                            "message.content has a part without text".to_owned(),
                        ))
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(LlmError::InvalidResponse(
            "message.content is neither text nor null".to_owned(),
        )),
    }
}

/// Maps the provider's tool calls, keeping `arguments` as raw text. A missing or empty
/// id becomes `call_<index>` (made unique against the other ids of the same answer).
fn decode_tool_calls(raw: &[Value]) -> Result<Vec<ToolCall>, LlmError> {
    let given: Vec<Option<&str>> = raw
        .iter()
        .map(|entry| {
            entry
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
        })
        .collect();
    let mut calls = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        if !entry.is_object() {
            return Err(LlmError::InvalidResponse(format!(
                "tool_calls[{index}] is not an object"
            )));
        }
        let id = match given[index] {
            Some(id) => id.to_owned(),
            None => generated_id(index, &given, &calls),
        };
        let function = entry.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let arguments = match function.and_then(|f| f.get("arguments")) {
            // Absent arguments mean "no arguments"; this is not malformed JSON.
            None | Some(Value::Null) => "{}".to_owned(),
            Some(Value::String(text)) => text.clone(),
            // Some providers send an object instead of its text: keep it as JSON text so
            // the planner validates exactly what was sent.
            Some(other) => other.to_string(),
        };
        calls.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(calls)
}

fn generated_id(index: usize, given: &[Option<&str>], done: &[ToolCall]) -> String {
    let taken = |candidate: &str| {
        given.iter().flatten().any(|id| *id == candidate) || done.iter().any(|c| c.id == candidate)
    };
    let mut candidate = format!("call_{index}");
    let mut suffix = 1u32;
    while taken(&candidate) {
        candidate = format!("call_{index}_{suffix}");
        suffix += 1;
    }
    candidate
}

/// `tool_calls`, `length` and `content_filter` are kept; anything else is `stop`.
pub(crate) fn normalise_finish_reason(raw: Option<&str>) -> &'static str {
    match raw {
        Some("tool_calls") => "tool_calls",
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

/// The provider's usage, normalised by [`Usage::normalised`] (a missing or undercounting
/// `total_tokens` becomes `prompt + completion`). Absent usage is all zeros.
fn decode_usage(raw: Option<&Value>) -> Usage {
    let Some(usage) = raw.filter(|u| u.is_object()) else {
        return Usage::default();
    };
    let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: field("prompt_tokens"),
        completion_tokens: field("completion_tokens"),
        total_tokens: field("total_tokens"),
    }
    .normalised()
}

/// Builds the provider error for a non-2xx answer.
///
/// `{"detail":{"kind","message"}}` gives kind and message; a string `detail` gives kind
/// `unknown` and the detail text; an OpenAI-style `{"error":{"message"}}` gives its
/// message; any other body gives its own text. Messages keep at most 500 characters;
/// an empty one is replaced by the status's reason phrase.
pub(crate) fn decode_error(status: u16, reason: Option<&str>, body: &[u8]) -> LlmError {
    let text = String::from_utf8_lossy(body);
    let (kind, message) = match serde_json::from_str::<Value>(&text) {
        Ok(json) => match json.get("detail") {
            Some(Value::String(detail)) => ("unknown".to_owned(), detail.clone()),
            Some(Value::Object(detail)) => (
                detail
                    .get("kind")
                    .and_then(Value::as_str)
                    .map(sanitise_kind)
                    .unwrap_or_else(|| "unknown".to_owned()),
                detail
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => {
                let openai = json
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str);
                match openai {
                    Some(message) => ("unknown".to_owned(), message.to_owned()),
                    None => ("unknown".to_owned(), text.trim().to_owned()),
                }
            }
        },
        Err(_) => ("unknown".to_owned(), text.trim().to_owned()),
    };
    let mut message = truncate_chars(&message, ERROR_MESSAGE_CHARS);
    if message.is_empty() {
        message = reason.unwrap_or("no error details").to_owned();
    }
    LlmError::Provider {
        status,
        kind,
        message,
    }
}

/// Keeps a provider kind when it looks like a label (`[a-z0-9_-]`, bounded length), so
/// metric labels stay bounded; anything else becomes `unknown`.
fn sanitise_kind(kind: &str) -> String {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_CHARS
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        kind.to_owned()
    } else {
        "unknown".to_owned()
    }
}

/// The first `max` characters of `text` (never splits a character).
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: None,
            messages,
            tools: Default::default(),
            temperature: None,
            max_tokens: None,
        }
    }

    fn encode(req: &ChatRequest) -> String {
        String::from_utf8(encode_request(req, "mana/reasoning", 0.3).unwrap()).unwrap()
    }

    #[test]
    fn body_has_fixed_key_order_and_defaults() {
        let req = request(vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        assert_eq!(
            encode(&req),
            r#"{"model":"mana/reasoning","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"tools":[],"tool_choice":"auto","temperature":0.3,"stream":false}"#
        );
        let mut bounded = req.clone();
        bounded.max_tokens = Some(1024);
        assert!(
            encode(&bounded).ends_with(r#""temperature":0.3,"max_tokens":1024,"stream":false}"#)
        );
    }

    #[test]
    fn model_and_temperature_fallbacks() {
        // (model, temperature, expected model, expected temperature text)
        let table: [(Option<&str>, Option<f32>, &str, &str); 5] = [
            (None, None, "mana/reasoning", "0.3"),
            (Some(""), Some(0.0), "mana/reasoning", "0.0"),
            (
                Some("google/gemini-2.5-flash-lite"),
                Some(0.7),
                "google/gemini-2.5-flash-lite",
                "0.7",
            ),
            (Some("m"), Some(f32::NAN), "m", "0.3"),
            (Some("m"), Some(f32::INFINITY), "m", "0.3"),
        ];
        for (model, temperature, want_model, want_temp) in table {
            let mut req = request(vec![]);
            req.model = model.map(str::to_owned);
            req.temperature = temperature;
            let body = encode(&req);
            assert!(
                body.contains(&format!(r#""model":"{want_model}""#)),
                "{body}"
            );
            assert!(
                body.contains(&format!(r#""temperature":{want_temp},"#)),
                "{body}"
            );
        }
    }

    #[test]
    fn wire_messages_follow_the_contract() {
        let call = ToolCall {
            id: "c1".into(),
            name: "create_task".into(),
            arguments: r#"{"title":"x"}"#.into(),
        };
        let mut empty_id_tool = ChatMessage::tool_result("", "r");
        empty_id_tool.tool_call_id = Some(String::new());
        let req = request(vec![
            ChatMessage::assistant(None, vec![call]),
            ChatMessage::assistant(Some("plain".into()), vec![]),
            ChatMessage::tool_result("c1", "ok"),
            empty_id_tool,
        ]);
        let body: Value = serde_json::from_str(&encode(&req)).unwrap();
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(
            serde_json::to_string(&msgs[0]).unwrap(),
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"create_task","arguments":"{\"title\":\"x\"}"}}]}"#
        );
        assert_eq!(
            serde_json::to_string(&msgs[1]).unwrap(),
            r#"{"role":"assistant","content":"plain"}"#
        );
        assert_eq!(
            serde_json::to_string(&msgs[2]).unwrap(),
            r#"{"role":"tool","content":"ok","tool_call_id":"c1"}"#
        );
        assert_eq!(
            serde_json::to_string(&msgs[3]).unwrap(),
            r#"{"role":"tool","content":"r"}"#
        );
    }

    #[test]
    fn tools_keep_their_key_order() {
        let tool: Value = serde_json::from_str(
            r#"{"type":"function","function":{"name":"b","description":"d","parameters":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"string"}},"required":["z"]}}}"#,
        )
        .unwrap();
        let mut req = request(vec![]);
        req.tools = vec![tool].into();
        assert!(encode(&req).contains(
            r#""tools":[{"type":"function","function":{"name":"b","description":"d","parameters":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"string"}},"required":["z"]}}}],"tool_choice":"auto""#
        ));
    }

    #[test]
    fn finish_reason_table() {
        let table = [
            (Some("tool_calls"), "tool_calls"),
            (Some("length"), "length"),
            (Some("content_filter"), "content_filter"),
            (Some("stop"), "stop"),
            (Some("function_call"), "stop"),
            (Some("TOOL_CALLS"), "stop"),
            (None, "stop"),
        ];
        for (raw, want) in table {
            assert_eq!(normalise_finish_reason(raw), want, "{raw:?}");
        }
    }

    fn decode(v: Value) -> Result<ChatResponse, LlmError> {
        decode_response(v.to_string().as_bytes())
    }

    #[test]
    fn usage_table() {
        let table = [
            (json!(null), (0, 0, 0)),
            (json!({}), (0, 0, 0)),
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5}),
                (10, 5, 15),
            ),
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40}),
                (10, 5, 40),
            ),
            (json!({"prompt_tokens": 7, "total_tokens": null}), (7, 0, 7)),
            // An undercounting total is raised to the sum (`Usage::normalised`).
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 3}),
                (10, 5, 15),
            ),
        ];
        for (usage, (p, c, t)) in table {
            let mut body = json!({"choices":[{"message":{"content":"x"}}]});
            if !usage.is_null() {
                body["usage"] = usage.clone();
            }
            let got = decode(body).unwrap().usage;
            assert_eq!(
                got,
                Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: t
                },
                "{usage}"
            );
        }
    }

    #[test]
    fn tool_calls_keep_raw_arguments_and_get_ids() {
        let body = json!({"choices":[{"finish_reason":"tool_calls","message":{"content":null,"tool_calls":[
            {"id":"a","type":"function","function":{"name":"create_task","arguments":"{\"title\":\"t\"}"}},
            {"type":"function","function":{"name":"x","arguments":"{not json"}},
            {"id":"","function":{"name":"y"}},
            {"id":"call_3","function":{"name":"z","arguments":{"k":1}}}
        ]}}]});
        let got = decode(body).unwrap();
        assert_eq!(got.content, None);
        assert_eq!(got.finish_reason.as_deref(), Some("tool_calls"));
        let ids: Vec<&str> = got.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "call_1", "call_2", "call_3"]);
        let args: Vec<&str> = got
            .tool_calls
            .iter()
            .map(|c| c.arguments.as_str())
            .collect();
        assert_eq!(args, [r#"{"title":"t"}"#, "{not json", "{}", r#"{"k":1}"#]);
        assert_eq!(got.tool_calls[0].name, "create_task");
    }

    #[test]
    fn generated_ids_avoid_collisions() {
        let body = json!({"choices":[{"message":{"tool_calls":[
            {"function":{"name":"x","arguments":"{}"}},
            {"id":"call_0","function":{"name":"y","arguments":"{}"}}
        ]}}]});
        let got = decode(body).unwrap();
        assert_eq!(got.tool_calls[0].id, "call_0_1");
        assert_eq!(got.tool_calls[1].id, "call_0");
    }

    #[test]
    fn content_variants() {
        let table = [
            (json!("hi"), Some("hi")),
            (json!(null), None),
            (
                json!([{"type":"text","text":"a"},{"type":"text","text":"b"}]),
                Some("ab"),
            ),
        ];
        for (content, want) in table {
            let got = decode(json!({"choices":[{"message":{"content":content}}]})).unwrap();
            assert_eq!(got.content.as_deref(), want);
        }
        assert!(matches!(
            decode(json!({"choices":[{"message":{"content":42}}]})),
            Err(LlmError::InvalidResponse(_))
        ));
    }

    #[test]
    fn unusable_bodies_are_invalid_responses() {
        let table: [&[u8]; 7] = [
            b"not json",
            b"",
            br#"{}"#,
            br#"{"choices":[]}"#,
            br#"{"choices":null}"#,
            br#"{"choices":["x"]}"#,
            br#"{"choices":[{"message":{"tool_calls":{}}}]}"#,
        ];
        for body in table {
            assert!(
                matches!(decode_response(body), Err(LlmError::InvalidResponse(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // An error object in a 200 answer is a provider error with status 200.
        let table: [(&[u8], &str); 3] = [
            (
                br#"{"error":{"message":"quota exceeded","type":"insufficient_quota"}}"#,
                "quota exceeded",
            ),
            (br#"{"error":"boom"}"#, r#"{"error":"boom"}"#),
            (
                br#"{"detail":{"kind":"rate_limit","message":"slow"}}"#,
                "slow",
            ),
        ];
        for (body, message) in table {
            match decode_response(body) {
                Err(LlmError::Provider {
                    status: 200,
                    message: m,
                    ..
                }) => assert_eq!(m, message),
                other => panic!("{other:?}"),
            }
        }
        let got = decode_response(br#"{"choices":[{}]}"#).unwrap();
        assert_eq!(got.content, None);
        assert!(got.tool_calls.is_empty());
        assert_eq!(got.finish_reason.as_deref(), Some("stop"));
    }

    fn provider(status: u16, kind: &str, message: &str) -> LlmError {
        LlmError::Provider {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn error_body_table() {
        let long = "x".repeat(700);
        let table: Vec<(u16, Vec<u8>, LlmError)> = vec![
            (
                422,
                br#"{"detail":{"kind":"blocked","message":"content policy"}}"#.to_vec(),
                provider(422, "blocked", "content policy"),
            ),
            (
                502,
                br#"{"detail":{"kind":"auth"}}"#.to_vec(),
                provider(502, "auth", "Bad Gateway"),
            ),
            (
                400,
                br#"{"detail":{"message":"m"}}"#.to_vec(),
                provider(400, "unknown", "m"),
            ),
            (
                400,
                br#"{"detail":{"kind":"Weird Kind!","message":"m"}}"#.to_vec(),
                provider(400, "unknown", "m"),
            ),
            (
                500,
                format!(r#"{{"detail":"{long}"}}"#).into_bytes(),
                provider(500, "unknown", &"x".repeat(500)),
            ),
            (
                429,
                br#"{"error":{"message":"slow down","type":"rate_limit"}}"#.to_vec(),
                provider(429, "unknown", "slow down"),
            ),
            (
                503,
                b"<html>upstream down</html>\n".to_vec(),
                provider(503, "unknown", "<html>upstream down</html>"),
            ),
            (
                503,
                long.clone().into_bytes(),
                provider(503, "unknown", &"x".repeat(500)),
            ),
            (
                503,
                Vec::new(),
                provider(503, "unknown", "Service Unavailable"),
            ),
            (
                500,
                br#"{"other":1}"#.to_vec(),
                provider(500, "unknown", r#"{"other":1}"#),
            ),
        ];
        for (status, body, want) in table {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason());
            assert_eq!(decode_error(status, reason, &body), want);
        }
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("äöü", 2), "äö");
        assert_eq!(truncate_chars("ab", 5), "ab");
        assert_eq!(truncate_chars("", 0), "");
    }
}
