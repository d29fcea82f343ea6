//! Every setting as the settings types read it, with its default and its comment in
//! `config/default.toml`: what `docs/reference/configuration.md` is generated from.
//!
//! The keys and their types come from the types themselves: [`Settings`] is
//! deserialized from the defaults through [`Probe`], a deserializer that notes, for
//! every struct serde asks for, the fields serde expects (so a setting the defaults
//! leave out is found even when it has a serde default), and for every value the
//! kind serde asks for. The comments come from the file's text. The catalogue is
//! refused unless the types and the file agree key for key and every key has a
//! comment.

use super::{Settings, DEFAULTS, ENV_OVERRIDES};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A `[table]` of the settings file.
pub(crate) struct Section {
    /// `reconcile.quarantine`; empty for the file's preamble.
    pub(crate) name: String,
    /// The comment right above the table's header.
    pub(crate) comment: String,
    /// Comments of the table that belong to no key (examples, notes).
    pub(crate) notes: Vec<String>,
    pub(crate) settings: Vec<Setting>,
}

pub(crate) struct Setting {
    /// `reconcile.quarantine.window`.
    pub(crate) key: String,
    /// `integer ≥ 0`, `duration`, `` one of `text`, `json` ``...
    pub(crate) kind: String,
    /// The value in `config/default.toml`, as written there.
    pub(crate) default: String,
    /// Environment variables that set it, the one that wins last.
    pub(crate) env: Vec<String>,
    /// Its comment in `config/default.toml`.
    pub(crate) meaning: String,
}

/// The settings file's sections, in the file's order, each with its settings.
pub(crate) fn sections() -> Result<Vec<Section>, String> {
    let kinds = kinds()?;
    let mut problems = Vec::new();
    let mut sections = vec![Section {
        name: String::new(),
        comment: String::new(),
        notes: Vec::new(),
        settings: Vec::new(),
    }];
    let mut seen = Vec::new();
    for line in scan(DEFAULTS) {
        let section = sections.last_mut().expect("the preamble");
        match line {
            Line::Note(text) => section.notes.push(text),
            Line::Table { name, comment } if !kinds.leaves.contains_key(&name) => {
                if !kinds.tables.contains(&name) {
                    problems.push(format!("[{name}] is no table of the settings types"));
                }
                sections.push(Section {
                    name,
                    comment,
                    notes: Vec::new(),
                    settings: Vec::new(),
                });
            }
            // A top-level table that is one setting (`[identifiers]`): a section of
            // its own, whose one setting it is.
            Line::Table { name, comment } if !name.contains('.') => {
                seen.push(name.clone());
                let setting = setting(&kinds, name.clone(), "{}".into(), comment);
                sections.push(Section {
                    name,
                    comment: String::new(),
                    notes: Vec::new(),
                    settings: vec![setting],
                });
            }
            // A table that is one setting (`[kafka.properties]`): its entries are the
            // value; the defaults have none.
            Line::Table { name, comment } => {
                seen.push(name.clone());
                let Some(parent) = sections
                    .iter_mut()
                    .rev()
                    .find(|s| name.starts_with(&format!("{}.", s.name)))
                else {
                    problems.push(format!("[{name}] comes before its parent table"));
                    continue;
                };
                parent
                    .settings
                    .push(setting(&kinds, name, "{}".into(), comment));
            }
            Line::Key {
                name,
                value,
                comment,
            } => {
                let key = format!("{}.{name}", section.name);
                if section.name.is_empty() || !kinds.leaves.contains_key(&key) {
                    problems.push(format!("{key} is no setting of the settings types"));
                    continue;
                }
                if kinds.leaves[&key] == TABLE_KIND {
                    problems.push(format!("{key} is a table: write it as [{key}]"));
                }
                seen.push(key.clone());
                section.settings.push(setting(&kinds, key, value, comment));
            }
        }
    }
    for key in kinds.leaves.keys().filter(|k| !seen.contains(k)) {
        problems.push(format!("{key} is missing from config/default.toml"));
    }
    problems.extend(kinds.problems);
    for setting in sections.iter().flat_map(|s| &s.settings) {
        if setting.meaning.is_empty() {
            problems.push(format!(
                "{} has no comment in config/default.toml (write one right above it)",
                setting.key
            ));
        }
    }
    // The probe and the file's scan may both find a missing key.
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(sections)
    } else {
        Err(problems.join("\n"))
    }
}

fn setting(kinds: &Kinds, key: String, default: String, meaning: String) -> Setting {
    let mut kind = kinds.leaves[&key].clone();
    // serde asks for a string for both a duration and a plain string (an address, a
    // topic): a default that reads as a duration tells them apart.
    if kind == "string" {
        let text = default.trim_matches(['"', '\'']);
        if humantime::parse_duration(text).is_ok() {
            kind = "duration".into();
        }
    }
    // The environment layer gives strings only: lists and tables are set in a file.
    let mut env = Vec::new();
    let is_table = kind == TABLE_KIND;
    if let Some((_, entries)) = TABLE_ENTRIES.iter().find(|(table, _)| *table == key) {
        kind = (*entries).to_owned();
    }
    if kind != LIST_KIND && !is_table {
        env.push(format!("IR__{}", key.replace('.', "__").to_uppercase()));
        env.extend(
            ENV_OVERRIDES
                .iter()
                .filter(|(_, overridden)| *overridden == key)
                .map(|(var, _)| (*var).to_owned()),
        );
    }
    Setting {
        key,
        kind,
        default,
        env,
        meaning,
    }
}

/// A line of the settings file that the reference shows.
enum Line {
    /// `[name]`, with the comment right above it.
    Table { name: String, comment: String },
    /// `name = value`, with the comment right above it.
    Key {
        name: String,
        value: String,
        comment: String,
    },
    /// A comment that is right above neither (an example, a note).
    Note(String),
}

/// The file's tables, keys and comments, in order. A comment belongs to the table
/// or key right below it; one followed by an empty line is a note. Keys and tables
/// must be on lines of their own (the check against the types finds any other).
fn scan(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix('#') {
            comment.push(text.strip_prefix(' ').unwrap_or(text));
            continue;
        }
        let above = comment.join("\n");
        comment.clear();
        if line.is_empty() {
            if !above.is_empty() {
                lines.push(Line::Note(above));
            }
        } else if let Some(name) = line.strip_prefix('[') {
            lines.push(Line::Table {
                name: name.trim_end_matches(']').trim().to_owned(),
                comment: above,
            });
        } else if let Some((name, value)) = line.split_once('=') {
            lines.push(Line::Key {
                name: name.trim().to_owned(),
                value: value.trim().to_owned(),
                comment: above,
            });
        }
    }
    if !comment.is_empty() {
        lines.push(Line::Note(comment.join("\n")));
    }
    lines
}

const LIST_KIND: &str = "list";
const TABLE_KIND: &str = "table";

/// What the entries of a table setting are: serde never asks for them when the
/// defaults have none, so the types cannot say.
const TABLE_ENTRIES: [(&str, &str); 2] = [
    ("kafka.properties", "table of strings"),
    ("identifiers", "table of identifier kinds"),
];

/// What the types read: the kind of every setting and the tables they are in.
#[derive(Default)]
struct Kinds {
    /// Setting → the kind serde asked for.
    leaves: BTreeMap<String, String>,
    tables: Vec<String>,
    problems: Vec<String>,
}

fn kinds() -> Result<Kinds, String> {
    let defaults: Value = config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| format!("config/default.toml does not load: {e}"))?;
    let found = RefCell::new(Kinds::default());
    Settings::deserialize(Probe {
        path: String::new(),
        value: &defaults,
        found: &found,
    })
    .map_err(|e| format!("the settings types do not read config/default.toml: {e}"))?;
    Ok(found.into_inner())
}

/// Deserializes a value of the defaults, noting what serde asks of it.
struct Probe<'a> {
    path: String,
    value: &'a Value,
    found: &'a RefCell<Kinds>,
}

impl Probe<'_> {
    fn note(&self, kind: &str) {
        self.found
            .borrow_mut()
            .leaves
            .insert(self.path.clone(), kind.to_owned());
    }
}

macro_rules! leaves {
    ($($method:ident => $kind:expr),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.note($kind);
            self.value.$method(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'de> {
    type Error = serde_json::Error;

    leaves! {
        deserialize_any => "value",
        deserialize_bool => "boolean",
        deserialize_i8 => "integer",
        deserialize_i16 => "integer",
        deserialize_i32 => "integer",
        deserialize_i64 => "integer",
        deserialize_u8 => "integer ≥ 0",
        deserialize_u16 => "integer ≥ 0",
        deserialize_u32 => "integer ≥ 0",
        deserialize_u64 => "integer ≥ 0",
        deserialize_f32 => "number",
        deserialize_f64 => "number",
        deserialize_char => "string",
        deserialize_str => "string",
        deserialize_string => "string",
        deserialize_bytes => "bytes",
        deserialize_byte_buf => "bytes",
        deserialize_unit => "unit",
        deserialize_seq => LIST_KIND,
        deserialize_map => TABLE_KIND,
        deserialize_identifier => "string",
        deserialize_ignored_any => "value",
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Null => {
                self.note("value");
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.note("unit");
        self.value.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.note(LIST_KIND);
        self.value.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.note(LIST_KIND);
        self.value.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let names: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
        self.note(&format!("one of {}", names.join(", ")));
        self.value.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let Value::Object(table) = self.value else {
            return Err(de::Error::custom(format!("{} must be a table", self.path)));
        };
        {
            let mut found = self.found.borrow_mut();
            if !self.path.is_empty() {
                found.tables.push(self.path.clone());
            }
            for key in table.keys().filter(|k| !fields.contains(&k.as_str())) {
                found.problems.push(format!(
                    "{} is no setting of the settings types",
                    self.key(key)
                ));
            }
            for field in fields.iter().filter(|f| !table.contains_key(**f)) {
                found.problems.push(format!(
                    "{} is missing from config/default.toml",
                    self.key(field)
                ));
            }
        }
        let present = fields.iter().filter(|f| table.contains_key(**f));
        visitor.visit_map(Fields {
            probe: &self,
            table,
            fields: present.copied().collect::<Vec<_>>().into_iter(),
            current: None,
        })
    }
}

impl Probe<'_> {
    fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }
}

/// The fields of a table that the defaults hold, in the type's order.
struct Fields<'p, 'de> {
    probe: &'p Probe<'de>,
    table: &'de serde_json::Map<String, Value>,
    fields: std::vec::IntoIter<&'static str>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Fields<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.current = self.fields.next();
        self.current
            .map(|field| seed.deserialize(field.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let field = self.current.expect("a key before its value");
        seed.deserialize(Probe {
            path: self.probe.key(field),
            value: &self.table[field],
            found: self.probe.found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_in_the_defaults_with_a_comment_and_nothing_else_is() {
        let sections = sections().unwrap_or_else(|problems| panic!("{problems}"));
        let window = sections
            .iter()
            .flat_map(|s| &s.settings)
            .find(|s| s.key == "reconcile.quarantine.window")
            .expect("a nested setting");
        assert_eq!(window.kind, "duration");
        assert_eq!(window.default, "\"30d\"");
        assert_eq!(window.env, ["IR__RECONCILE__QUARANTINE__WINDOW"]);
        let url = sections
            .iter()
            .flat_map(|s| &s.settings)
            .find(|s| s.key == "database.url")
            .expect("the database URL");
        assert_eq!(url.env, ["IR__DATABASE__URL", "DATABASE_URL"]);
    }

    #[test]
    fn a_comment_belongs_to_the_line_right_below_it_or_is_a_note() {
        let found = scan("# The pool.\n[database]\n# Its size.\nmax_connections = 16\nurl = \"x\"\n\n# An example.\n");
        assert!(
            matches!(&found[0], Line::Table { name, comment } if name == "database" && comment == "The pool.")
        );
        assert!(
            matches!(&found[1], Line::Key { name, comment, .. } if name == "max_connections" && comment == "Its size.")
        );
        assert!(
            matches!(&found[2], Line::Key { name, comment, .. } if name == "url" && comment.is_empty())
        );
        assert!(matches!(&found[3], Line::Note(text) if text == "An example."));
    }
}
