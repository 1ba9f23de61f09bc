//! Shallow research: mana-api news research (discover feeds, search them) rendered as one
//! input. Every failure only drops the input and is counted by outcome.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::MissionView;
use mana_ai_store::DueMission;

use super::http::{call_json, str_of, CallError};
use super::{one_line, plain, research_input, Researcher, SOURCES_NOTE};
use crate::events::{self, Emit};

/// One article found by news research.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub url: String,
    pub excerpt: Option<String>,
    pub published_at: Option<String>,
}

/// The shallow-research text: heading, counts, one block per article, sources note.
pub fn render_web_research(query: &str, feeds: usize, articles: &[Article]) -> String {
    let mut lines = vec![
        format!("# Web-Research: \"{query}\""),
        String::new(),
        format!(
            "{feeds} Quellen durchsucht, {} relevante Artikel gefunden:",
            articles.len()
        ),
        String::new(),
    ];
    for a in articles {
        lines.push(format!("## {}", one_line(&a.title)));
        if let Some(e) = a.excerpt.as_deref().map(one_line).filter(|e| !e.is_empty()) {
            lines.push(format!("> {e}"));
        }
        lines.push(format!("URL: {}", one_line(&a.url)));
        if let Some(d) = a
            .published_at
            .as_deref()
            .map(one_line)
            .filter(|d| !d.is_empty())
        {
            lines.push(format!("Datum: {d}"));
        }
        lines.push(String::new());
    }
    lines.push("---".into());
    lines.push(SOURCES_NOTE.into());
    lines.join("\n")
}

impl Researcher {
    pub(super) async fn shallow_research(
        &self,
        due: &DueMission,
        mission: &MissionView,
    ) -> Option<ResolvedInput> {
        let base = self.cfg.news_api_url.as_deref()?;
        let query = plain(&mission.objective).trim();
        let outcome = if query.is_empty() {
            Err("no-query")
        } else {
            self.news_research(base, &due.user_id, query).await
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(l) => l,
        };
        events::ShallowResearched { outcome: label }.emit(&self.metrics);
        let content = outcome.ok()?;
        Some(research_input("Web-Research", query, content))
    }

    fn news_headers(&self, user_id: &str) -> Result<HeaderMap, &'static str> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(name) = self.cfg.news_service_key_header.as_deref() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid-config")?;
            if let Some(v) = self.cfg.service_key.header_value() {
                h.insert(name, v);
            }
        }
        if let Some(name) = self.cfg.news_user_id_header.as_deref() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid-config")?;
            h.insert(
                name,
                HeaderValue::from_str(user_id).map_err(|_| "invalid-config")?,
            );
        }
        Ok(h)
    }

    /// Discover feeds, search them, render the markdown. `Err` is the metric outcome.
    async fn news_research(
        &self,
        base: &str,
        user_id: &str,
        query: &str,
    ) -> Result<String, &'static str> {
        let headers = self.news_headers(user_id)?;
        let t = self.cfg.research_timeouts;
        let body = json!({"query": query, "language": "de", "limit": 5});
        let url = format!("{base}/api/v1/news-research/discover");
        let discovered = call_json(
            &self.http,
            |c| c.post(&url).headers(headers.clone()).json(&body),
            t.discover,
            "news-discover",
        )
        .await
        .map_err(CallError::label)?;
        let feeds: Vec<&str> = discovered
            .get("feeds")
            .and_then(Value::as_array)
            .ok_or("invalid-response")?
            .iter()
            .filter_map(|f| str_of(f, "url"))
            .filter(|u| !u.trim().is_empty())
            .collect();
        if feeds.is_empty() {
            return Err("no-feeds");
        }
        let body = json!({"feeds": feeds, "query": query, "limit": 8});
        let url = format!("{base}/api/v1/news-research/search");
        let found = call_json(
            &self.http,
            |c| c.post(&url).headers(headers).json(&body),
            t.search,
            "news-search",
        )
        .await
        .map_err(CallError::label)?;
        let articles: Vec<Article> = found
            .get("articles")
            .and_then(Value::as_array)
            .ok_or("invalid-response")?
            .iter()
            .filter_map(|a| {
                let url = str_of(a, "url").filter(|u| !u.trim().is_empty())?;
                Some(Article {
                    title: str_of(a, "title")
                        .filter(|t| !t.trim().is_empty())
                        .unwrap_or(url)
                        .to_string(),
                    url: url.to_string(),
                    excerpt: str_of(a, "excerpt").map(str::to_string),
                    published_at: str_of(a, "publishedAt").map(str::to_string),
                })
            })
            .collect();
        if articles.is_empty() {
            return Err("no-articles");
        }
        Ok(render_web_research(query, feeds.len(), &articles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_research_markdown_has_the_exact_shape() {
        let md = render_web_research(
            "Solar",
            3,
            &[
                Article {
                    title: "A".into(),
                    url: "https://a.example/1".into(),
                    excerpt: Some("Kurz".into()),
                    published_at: Some("2026-01-02".into()),
                },
                Article {
                    title: "B\nzwei".into(),
                    url: "https://b.example".into(),
                    excerpt: None,
                    published_at: Some(String::new()),
                },
            ],
        );
        assert_eq!(
            md,
            "# Web-Research: \"Solar\"\n\n3 Quellen durchsucht, 2 relevante Artikel gefunden:\n\n\
             ## A\n> Kurz\nURL: https://a.example/1\nDatum: 2026-01-02\n\n\
             ## B zwei\nURL: https://b.example\n\n---\n\
             Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."
        );
    }
}
