//! The built-in catalog speaks German and English: every tool and every described
//! parameter has both texts, and the German specs carry the German texts.

use mana_ai_core::catalog::{function_specs_in, Catalog, CatalogError, Param};
use mana_ai_core::lang::Lang;

fn check_params(tool: &str, params: &[Param], missing: &mut Vec<String>) {
    for p in params {
        match p.description_de.as_deref() {
            Some(de) if !de.trim().is_empty() && de != p.description => {}
            _ => missing.push(format!("{tool}.{}", p.name)),
        }
        if let Some(props) = &p.properties {
            check_params(tool, props, missing);
        }
        if let Some(items) = &p.items {
            if items.description.is_some() && items.description_de.is_none() {
                missing.push(format!("{tool}.{}[]", p.name));
            }
            if let Some(props) = &items.properties {
                check_params(tool, props, missing);
            }
        }
    }
}

#[test]
fn every_tool_and_parameter_has_a_german_and_an_english_description() {
    let catalog = Catalog::builtin();
    let mut missing = Vec::new();
    for tool in catalog.tools() {
        assert!(!tool.description.trim().is_empty(), "{}", tool.name);
        match tool.description_de.as_deref() {
            Some(de) if !de.trim().is_empty() && de != tool.description => {}
            _ => missing.push(tool.name.clone()),
        }
        check_params(&tool.name, &tool.parameters, &mut missing);
    }
    assert!(missing.is_empty(), "without German text: {missing:?}");
    assert_eq!(catalog.len(), 110);
}

#[test]
fn specs_in_each_language_differ_only_in_descriptions() {
    let catalog = Catalog::builtin();
    let tools: Vec<_> = catalog.tools().iter().collect();
    let en = function_specs_in(&tools, Lang::En);
    let de = function_specs_in(&tools, Lang::De);
    assert_eq!(en.len(), de.len());
    let create = tools.iter().position(|t| t.name == "create_task").unwrap();
    assert_eq!(
        de[create]["function"]["description"],
        "Lege eine neue Aufgabe an. Fälligkeitsdatum und Priorität sind optional."
    );
    assert_eq!(
        de[create]["function"]["parameters"]["properties"]["title"]["description"],
        "Titel der Aufgabe"
    );
    // Names, types, enums and required lists are the same.
    for (e, d) in en.iter().zip(&de) {
        assert_eq!(e["function"]["name"], d["function"]["name"]);
        assert_eq!(
            e["function"]["parameters"]["required"],
            d["function"]["parameters"]["required"]
        );
        let ep = e["function"]["parameters"]["properties"]
            .as_object()
            .unwrap();
        let dp = d["function"]["parameters"]["properties"]
            .as_object()
            .unwrap();
        assert_eq!(ep.keys().collect::<Vec<_>>(), dp.keys().collect::<Vec<_>>());
        for (k, v) in ep {
            assert_eq!(v["type"], dp[k]["type"]);
            assert_eq!(v.get("enum"), dp[k].get("enum"));
        }
    }
}

#[test]
fn a_german_overlay_must_cover_the_catalog_exactly() {
    let en = r#"[{"name":"t","module":"m","defaultPolicy":"propose","description":"D",
        "parameters":[{"name":"p","type":"string","required":true,"description":"P"}]}]"#;
    let ok = r#"{"t":{"description":"De","parameters":{"p":"Pe"}}}"#;
    let c = Catalog::from_json_with_german(en, ok).unwrap();
    assert_eq!(c.tools()[0].description_in(Lang::De), "De");
    assert_eq!(c.tools()[0].description_in(Lang::En), "D");
    for bad in [
        r#"{}"#,
        r#"{"t":{"description":"De","parameters":{}}}"#,
        r#"{"t":{"description":"De","parameters":{"p":"Pe","q":"x"}}}"#,
        r#"{"t":{"description":" ","parameters":{"p":"Pe"}}}"#,
        r#"{"t":{"description":"De","parameters":{"p":"Pe"}},"u":{"description":"x","parameters":{}}}"#,
    ] {
        let e = Catalog::from_json_with_german(en, bad).unwrap_err();
        assert!(matches!(e, CatalogError::German(_)), "{bad}: {e}");
    }
}
