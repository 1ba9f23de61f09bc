//! The input registry (data-model §8): module key → sync app id, whether its records are
//! encrypted, and how they are rendered; plus the bounded `table` metric label.

/// How a module's records are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Goal,
    Note,
    Task,
    Event,
    Journal,
    Kontext,
    Profile,
}

/// One registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolver {
    /// The module key (also the metric label).
    pub module: &'static str,
    /// The sync channel (`sync_changes.app_id`) the records live in.
    pub app_id: &'static str,
    /// Whether reading needs a key grant.
    pub encrypted: bool,
    pub format: Format,
}

/// The resolver registry (data-model §8). `todo` is an alias of `tasks`.
pub fn resolver_for(module: &str) -> Option<Resolver> {
    let (module, app_id, encrypted, format) = match module {
        "goals" => ("goals", "companion", false, Format::Goal),
        "notes" => ("notes", "notes", true, Format::Note),
        "tasks" => ("tasks", "todo", true, Format::Task),
        "todo" => ("todo", "todo", true, Format::Task),
        "calendar" => ("calendar", "calendar", true, Format::Event),
        "journal" => ("journal", "journal", true, Format::Journal),
        "kontext" => ("kontext", "kontext", true, Format::Kontext),
        "profile" => ("profile", "profile", true, Format::Profile),
        _ => return None,
    };
    Some(Resolver {
        module,
        app_id,
        encrypted,
        format,
    })
}

/// Bounded `table` metric label: the tables the webapp links, else `other` (the table
/// name comes from user data and must not mint label values).
pub fn table_label(table: &str) -> &'static str {
    match table {
        "notes" => "notes",
        "tasks" => "tasks",
        "events" => "events",
        "journalEntries" => "journalEntries",
        "kontextDoc" => "kontextDoc",
        "userContext" => "userContext",
        "companionGoals" => "companionGoals",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_table() {
        let cases = [
            ("goals", "companion", false),
            ("notes", "notes", true),
            ("tasks", "todo", true),
            ("todo", "todo", true),
            ("calendar", "calendar", true),
            ("journal", "journal", true),
            ("kontext", "kontext", true),
            ("profile", "profile", true),
        ];
        for (module, app, encrypted) in cases {
            let r = resolver_for(module).unwrap();
            assert_eq!((r.module, r.app_id, r.encrypted), (module, app, encrypted));
        }
        for unknown in ["", "Notes", "news-research", "ai", "contacts"] {
            assert!(resolver_for(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn table_labels_are_bounded() {
        assert_eq!(table_label("notes"), "notes");
        assert_eq!(table_label("journalEntries"), "journalEntries");
        assert_eq!(table_label("a-user-chosen-table"), "other");
    }
}
