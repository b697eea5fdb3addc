//! Configuration loading: a TOML file plus `TERN_`-prefixed environment overrides.
//!
//! An environment variable `TERN_SECTION__KEY=value` sets `section.key` (a double underscore
//! separates levels, names are lowercased). Environment values are kept as text in the merged
//! tree and only become numbers, booleans or lists when the field they land in asks for one, so
//! an `admin_token` of `123456` or a `hostname` of `true` stays the string it was written as.
//! Each agent defines its own `Config` type; this module only produces it.
//!
//! Coercion rules, applied when `T` asks for a type and the value came from the environment:
//! - integers (`u16`, `usize`, `i64`, …): plain decimal text with an optional sign, surrounding
//!   spaces ignored; out-of-range or malformed text is an error naming the key and the text;
//! - floats: Rust float syntax (`1.5`, `12e45`); booleans: `true` or `false`, any case;
//! - strings, paths and anything parsed from a string (`SocketAddr`): the text, byte for byte;
//! - `Option<T>`: an empty value means `None`, which lets the environment switch off an
//!   optional section the file turned on (`TERN_TLS=`);
//! - sequences: a TOML array literal (`[60, 300]`, `["a", "b"]`) or a comma-separated list
//!   (`60,300`), each item then coerced like a single value; an empty value is an empty list;
//! - enums: the variant name (`json` for `#[serde(rename_all = "lowercase")]`);
//! - tables: a TOML inline table (`{ cert = "a.pem", key = "b.pem" }`), though setting each key
//!   on its own (`TERN_TLS__CERT`, `TERN_TLS__KEY`) is the usual way.
//!
//! Values from the file keep their TOML types, with one convenience: a file integer read into a
//! string field becomes its decimal text (`admin_token = 123456`). Floats and booleans are not
//! turned into strings, because their text would not round-trip to what the user typed. A TOML
//! datetime becomes its RFC 3339 text, since no agent has a datetime setting.
//!
//! What this deliberately does not do: it reports the first error, with its key path, rather
//! than every error (serde stops at the first); and fields behind `#[serde(flatten)]` or in
//! untagged enums see environment values as plain strings, because serde buffers those without
//! saying what type it wants.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Loads `T` from an optional TOML file and the given environment (normally `std::env::vars()`;
/// tests pass their own list instead of mutating the process environment).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<T> {
    let mut root = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read config file {}", path.display()))?;
            let table = toml::from_str::<toml::Table>(&text)
                .with_context(|| format!("parse config file {}", path.display()))?;
            table_from_toml(table)
        }
        None => BTreeMap::new(),
    };
    apply_env(&mut root, env);
    let top = NodeDe {
        node: Node::Table(root),
        path: String::new(),
    };
    T::deserialize(top).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// One value of the merged configuration tree.
#[derive(Debug)]
enum Node {
    /// A string written in the file (or inside a TOML literal): it stays a string.
    Str(String),
    /// Text from an environment variable: it becomes whatever the target field asks for.
    Env(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Node>),
    Table(BTreeMap<String, Node>),
}

fn node_from_toml(value: toml::Value) -> Node {
    match value {
        toml::Value::String(s) => Node::Str(s),
        toml::Value::Integer(i) => Node::Int(i),
        toml::Value::Float(f) => Node::Float(f),
        toml::Value::Boolean(b) => Node::Bool(b),
        toml::Value::Datetime(d) => Node::Str(d.to_string()),
        toml::Value::Array(items) => Node::Array(items.into_iter().map(node_from_toml).collect()),
        toml::Value::Table(t) => Node::Table(table_from_toml(t)),
    }
}

fn table_from_toml(table: toml::Table) -> BTreeMap<String, Node> {
    table
        .into_iter()
        .map(|(k, v)| (k, node_from_toml(v)))
        .collect()
}

fn apply_env(root: &mut BTreeMap<String, Node>, env: impl IntoIterator<Item = (String, String)>) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("TERN_") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        set_path(root, &path, Node::Env(value));
    }
}

/// Puts `value` at `path`, turning any non-table found on the way into an empty table: the
/// environment variable is the more specific instruction, so it wins over a file scalar.
fn set_path(root: &mut BTreeMap<String, Node>, path: &[String], value: Node) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| Node::Table(BTreeMap::new()));
        if !matches!(entry, Node::Table(_)) {
            *entry = Node::Table(BTreeMap::new());
        }
        cur = match entry {
            Node::Table(t) => t,
            _ => return,
        };
    }
    cur.insert(last.clone(), value);
}

/// A configuration error, located at a dotted key path once the deserializer that raised it
/// (or the innermost one it passed through) knows where it is.
#[derive(Debug)]
struct Error {
    path: Option<String>,
    msg: String,
}

impl Error {
    fn at_path(path: &str, msg: String) -> Self {
        Self {
            path: Some(path.to_string()),
            msg,
        }
    }

    /// Records `path` unless a deeper deserializer already did: the innermost location is the
    /// one the user needs to fix.
    fn located(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_deref() {
            Some(path) if !path.is_empty() => write!(f, "{path}: {}", self.msg),
            _ => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            msg: msg.to_string(),
        }
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Parses environment text as a number of type `N`, naming the key and the text on failure.
fn parse_env<N>(path: &str, text: &str, type_name: &str) -> Result<N, Error>
where
    N: std::str::FromStr,
    N::Err: fmt::Display,
{
    text.trim()
        .parse::<N>()
        .map_err(|e| Error::at_path(path, format!("{e} (value {text:?}, expected {type_name})")))
}

fn parse_env_bool(path: &str, text: &str) -> Result<bool, Error> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(Error::at_path(
            path,
            format!("expected true or false, found {text:?}"),
        ))
    }
}

/// Reads environment text as a TOML value literal (an array or an inline table).
fn parse_literal(path: &str, text: &str, what: &str) -> Result<Node, Error> {
    text.trim()
        .parse::<toml::Value>()
        .map(node_from_toml)
        .map_err(|e| {
            Error::at_path(
                path,
                format!("{text:?} is not a TOML {what}: {}", e.message()),
            )
        })
}

/// The items of a list given in one environment variable.
fn env_list(path: &str, text: &str) -> Result<Vec<Node>, Error> {
    let t = text.trim();
    if t.starts_with('[') {
        match parse_literal(path, text, "array")? {
            Node::Array(items) => Ok(items),
            _ => Err(Error::at_path(
                path,
                format!("{text:?} is not a TOML array"),
            )),
        }
    } else if t.is_empty() {
        Ok(Vec::new())
    } else {
        Ok(t.split(',')
            .map(|item| Node::Env(item.trim().to_string()))
            .collect())
    }
}

/// Deserializes one node of the tree, knowing its key path for error messages.
struct NodeDe {
    node: Node,
    path: String,
}

impl NodeDe {
    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        let result = match self.node {
            Node::Str(s) | Node::Env(s) => visitor.visit_string(s),
            Node::Int(i) => visitor.visit_i64(i),
            Node::Float(f) => visitor.visit_f64(f),
            Node::Bool(b) => visitor.visit_bool(b),
            Node::Array(items) => visit_items(items, &path, visitor),
            Node::Table(map) => visitor.visit_map(TableAccess::new(map, &path)),
        };
        result.map_err(|e: Error| e.located(&path))
    }
}

fn visit_items<'de, V: Visitor<'de>>(
    items: Vec<Node>,
    path: &str,
    visitor: V,
) -> Result<V::Value, Error> {
    let total = items.len();
    let mut access = ItemsAccess {
        items: items.into_iter().enumerate(),
        path,
    };
    let value = visitor.visit_seq(&mut access)?;
    let left = access.items.len();
    if left == 0 {
        Ok(value)
    } else {
        Err(Error::at_path(
            path,
            format!("{total} items given, only {} expected", total - left),
        ))
    }
}

/// Number methods: environment text is parsed as exactly the type the target asks for, so
/// range errors name that type; everything else goes to `deserialize_any`, where serde's own
/// visitors check ranges and report type mismatches.
macro_rules! number_methods {
    ($($method:ident: $ty:ty => $visit:ident;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.node {
                    Node::Env(text) => {
                        let n = parse_env::<$ty>(&self.path, &text, stringify!($ty))?;
                        visitor.$visit(n).map_err(|e: Error| e.located(&self.path))
                    }
                    node => NodeDe { node, path: self.path }.any(visitor),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Env(text) => {
                let b = parse_env_bool(&self.path, &text)?;
                visitor
                    .visit_bool(b)
                    .map_err(|e: Error| e.located(&self.path))
            }
            node => NodeDe {
                node,
                path: self.path,
            }
            .any(visitor),
        }
    }

    number_methods! {
        deserialize_i8: i8 => visit_i8;
        deserialize_i16: i16 => visit_i16;
        deserialize_i32: i32 => visit_i32;
        deserialize_i64: i64 => visit_i64;
        deserialize_i128: i128 => visit_i128;
        deserialize_u8: u8 => visit_u8;
        deserialize_u16: u16 => visit_u16;
        deserialize_u32: u32 => visit_u32;
        deserialize_u64: u64 => visit_u64;
        deserialize_u128: u128 => visit_u128;
        deserialize_f32: f32 => visit_f32;
        deserialize_f64: f64 => visit_f64;
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            // A file integer where text is wanted is taken as its decimal digits (see the
            // module comment); its text is exactly what the user wrote, less any underscores.
            Node::Int(i) => visitor
                .visit_string(i.to_string())
                .map_err(|e: Error| e.located(&self.path)),
            node => NodeDe {
                node,
                path: self.path,
            }
            .any(visitor),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Str(s) | Node::Env(s) => visitor
                .visit_byte_buf(s.into_bytes())
                .map_err(|e: Error| e.located(&self.path)),
            node => NodeDe {
                node,
                path: self.path,
            }
            .any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path.clone();
        let result = match self.node {
            Node::Env(text) if text.trim().is_empty() => visitor.visit_none(),
            node => visitor.visit_some(NodeDe {
                node,
                path: self.path,
            }),
        };
        result.map_err(|e: Error| e.located(&path))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node {
            Node::Env(text) if text.trim().is_empty() => visitor
                .visit_unit()
                .map_err(|e: Error| e.located(&self.path)),
            node => NodeDe {
                node,
                path: self.path,
            }
            .any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path.clone();
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: Error| e.located(&path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        match self.node {
            Node::Env(text) => visit_items(env_list(&path, &text)?, &path, visitor),
            node => NodeDe { node, path }.any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        match self.node {
            Node::Env(text) if text.trim_start().starts_with('{') => {
                let node = parse_literal(&path, &text, "inline table")?;
                NodeDe { node, path }.any(visitor)
            }
            node => NodeDe { node, path }.any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        let result = match self.node {
            Node::Env(text) => {
                let name: de::value::StringDeserializer<Error> =
                    text.trim().to_string().into_deserializer();
                visitor.visit_enum(name)
            }
            Node::Str(text) => {
                let name: de::value::StringDeserializer<Error> = text.into_deserializer();
                visitor.visit_enum(name)
            }
            // `{ variant = value }`, the externally tagged form TOML itself uses.
            Node::Table(map) if map.len() == 1 => match map.into_iter().next() {
                Some((variant, node)) => {
                    let path = join_key(&path, &variant);
                    visitor.visit_enum(TaggedEnum {
                        variant,
                        value: NodeDe { node, path },
                    })
                }
                None => Err(de::Error::custom("empty table where an enum was expected")),
            },
            node => return NodeDe { node, path }.any(visitor),
        };
        result.map_err(|e: Error| e.located(&path))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// The items of an array, each deserialized at `path[index]`.
struct ItemsAccess<'p> {
    items: std::iter::Enumerate<std::vec::IntoIter<Node>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for ItemsAccess<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some((index, node)) => {
                let path = format!("{}[{index}]", self.path);
                seed.deserialize(NodeDe { node, path }).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a table, each value deserialized at `path.key`.
struct TableAccess<'p> {
    entries: std::collections::btree_map::IntoIter<String, Node>,
    pending: Option<NodeDe>,
    path: &'p str,
}

impl<'p> TableAccess<'p> {
    fn new(map: BTreeMap<String, Node>, path: &'p str) -> Self {
        Self {
            entries: map.into_iter(),
            pending: None,
            path,
        }
    }
}

impl<'de> MapAccess<'de> for TableAccess<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, node)) => {
                let path = join_key(self.path, &key);
                let key_de: de::value::StringDeserializer<Error> = key.into_deserializer();
                let key_value = seed
                    .deserialize(key_de)
                    .map_err(|e: Error| e.located(&path))?;
                self.pending = Some(NodeDe { node, path });
                Ok(Some(key_value))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.pending.take() {
            Some(value) => seed.deserialize(value),
            None => Err(Error::at_path(
                self.path,
                "value asked for before its key".to_string(),
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as a one-entry table, `{ variant = value }`.
struct TaggedEnum {
    variant: String,
    value: NodeDe,
}

impl<'de> EnumAccess<'de> for TaggedEnum {
    type Error = Error;
    type Variant = NodeDe;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, NodeDe), Error> {
        let name: de::value::StringDeserializer<Error> = self.variant.into_deserializer();
        Ok((seed.deserialize(name)?, self.value))
    }
}

impl<'de> VariantAccess<'de> for NodeDe {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.node {
            Node::Table(map) if map.is_empty() => Ok(()),
            _ => Err(Error::at_path(
                &self.path,
                "a unit variant takes no value".to_string(),
            )),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

/// Limits of an SMTP listener (MSA and MTA).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct SmtpLimits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// RFC 5321 §4.5.3.2 asks for at least 5 minutes of patience per command.
    pub idle_timeout_secs: u64,
    /// More Received headers than this means the message is looping (RFC 5321 §6.3).
    pub max_received_headers: usize,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_connections: 1000,
            max_connections_per_ip: 20,
            idle_timeout_secs: 300,
            max_received_headers: 50,
        }
    }
}

/// Limits and policy of a ManageSieve listener (RFC 5804; the MDA's `[managesieve]` section).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManageSieveLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// How long a client may stay silent (RFC 5804 sets no figure; a user editing a script in
    /// a client that holds the connection open should not be cut off too soon).
    pub idle_timeout_secs: u64,
    /// After this many rejected logins on one connection the session says BYE.
    pub max_failed_logins: u32,
    /// After this many malformed commands on one connection the session says BYE.
    pub max_errors: u32,
    /// Longest command line, literals excluded (script names are at most 128 characters).
    pub max_line: usize,
    /// AUTHENTICATE only inside TLS (SASL PLAIN carries the password), as IMAP's
    /// LOGINDISABLED. Turn off only for a listener on loopback.
    pub login_requires_tls: bool,
}

impl Default for ManageSieveLimits {
    fn default() -> Self {
        Self {
            max_connections: 500,
            max_connections_per_ip: 10,
            idle_timeout_secs: 30 * 60,
            max_failed_logins: 3,
            max_errors: 20,
            max_line: 8 * 1024,
            login_requires_tls: true,
        }
    }
}

/// The start of every agent's `main`: reads `--config FILE` (or `TERN_CONFIG`) and the `TERN_*`
/// environment into `T`. On an error it prints the first problem (serde stops there) and exits with status 64
/// (EX_USAGE), before anything is bound.
pub fn from_args_or_exit<T: DeserializeOwned>(agent: &str) -> T {
    let mut args = std::env::args().skip(1);
    let mut file: Option<std::path::PathBuf> = std::env::var_os("TERN_CONFIG").map(Into::into);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => file = Some(p.into()),
                None => exit_usage(agent, "--config needs a file name"),
            },
            "--help" | "-h" => {
                println!(
                    "usage: {agent} [--config FILE]\n\nSettings come from FILE (TOML) and TERN_* environment variables\n(TERN_SECTION__KEY=value overrides section.key)."
                );
                std::process::exit(0);
            }
            other => exit_usage(agent, &format!("unexpected argument {other:?}")),
        }
    }
    let env = std::env::vars().filter(|(k, _)| k != "TERN_CONFIG");
    match load::<T>(file.as_deref(), env) {
        Ok(c) => c,
        Err(e) => exit_usage(agent, &format!("{e:#}")),
    }
}

fn exit_usage(agent: &str, msg: &str) -> ! {
    eprintln!("{agent}: configuration error: {msg}");
    std::process::exit(64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    #[derive(Debug, Deserialize)]
    struct Cfg {
        database_url: String,
        smtp: Smtp,
    }
    #[derive(Debug, Deserialize)]
    struct Smtp {
        port: u16,
        #[serde(default)]
        tls: bool,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Writes `text` to a file of its own (tests run in parallel) and returns its path.
    fn config_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn env_overrides_file_values_and_keeps_types() {
        let file = config_file(
            "types",
            "database_url = \"sqlite://x\"\n[smtp]\nport = 25\n",
        );
        let env = env(&[
            ("TERN_SMTP__PORT", "2525"),
            ("TERN_SMTP__TLS", "true"),
            ("TERN_DATABASE_URL", "postgres://u@h/db"),
            ("OTHER", "ignored"),
        ]);
        let cfg: Cfg = load(Some(&file), env).unwrap();
        assert_eq!(cfg.database_url, "postgres://u@h/db");
        assert_eq!(cfg.smtp.port, 2525);
        assert!(cfg.smtp.tls);
    }

    #[test]
    fn missing_required_field_is_reported() {
        let err = load::<Cfg>(None, Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("database_url") || err.contains("missing"),
            "{err}"
        );
    }

    #[derive(Debug, Deserialize)]
    struct Agent {
        admin_token: String,
        hostname: String,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn text_that_looks_like_a_number_or_bool_stays_a_string() {
        for (token, host) in [
            ("123456", "true"),
            ("12e45", "false"),
            ("007", "1.5"),
            ("0x1F", "inf"),
        ] {
            let env = env(&[("TERN_ADMIN_TOKEN", token), ("TERN_HOSTNAME", host)]);
            let cfg: Agent = load(None, env).unwrap();
            assert_eq!(cfg.admin_token, token);
            assert_eq!(cfg.hostname, host);
            assert_eq!(cfg.note, None);
        }
    }

    #[test]
    fn strings_keep_their_spaces_and_option_strings_come_from_env() {
        let env = env(&[
            ("TERN_ADMIN_TOKEN", " pass word "),
            ("TERN_HOSTNAME", "mx.example"),
            ("TERN_NOTE", "42"),
        ]);
        let cfg: Agent = load(None, env).unwrap();
        assert_eq!(cfg.admin_token, " pass word ");
        assert_eq!(cfg.note.as_deref(), Some("42"));
    }

    #[test]
    fn file_integer_read_as_string_becomes_its_digits() {
        let file = config_file("int-token", "admin_token = 123456\nhostname = \"mx\"\n");
        let cfg: Agent = load(Some(&file), Vec::new()).unwrap();
        assert_eq!(cfg.admin_token, "123456");
    }

    #[test]
    fn file_bool_read_as_string_is_an_error_naming_the_key() {
        let file = config_file("bool-host", "admin_token = \"t\"\nhostname = true\n");
        let err = load::<Agent>(Some(&file), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("hostname: invalid type: boolean"), "{err}");
    }

    #[derive(Debug, Deserialize)]
    struct Numbers {
        port: u16,
        size: u64,
        count: usize,
        offset: i64,
        ratio: f64,
        flag: bool,
        other_flag: bool,
    }

    #[test]
    fn numbers_and_booleans_are_parsed_when_asked_for() {
        let env = env(&[
            ("TERN_PORT", "2525"),
            ("TERN_SIZE", "26214400"),
            ("TERN_COUNT", " 100 "),
            ("TERN_OFFSET", "-3"),
            ("TERN_RATIO", "12e45"),
            ("TERN_FLAG", "true"),
            ("TERN_OTHER_FLAG", "FALSE"),
        ]);
        let n: Numbers = load(None, env).unwrap();
        assert_eq!(n.port, 2525);
        assert_eq!(n.size, 26_214_400);
        assert_eq!(n.count, 100);
        assert_eq!(n.offset, -3);
        assert_eq!(n.ratio, 12e45);
        assert!(n.flag);
        assert!(!n.other_flag);
    }

    #[test]
    fn bad_number_names_the_key_and_the_text() {
        let env = env(&[("TERN_SMTP__MAX_RECIPIENTS", "12x")]);
        let err = load::<Mta>(None, env).unwrap_err().to_string();
        assert!(
            err.contains("smtp.max_recipients: invalid digit found in string"),
            "{err}"
        );
        assert!(err.contains("\"12x\""), "{err}");
    }

    #[test]
    fn out_of_range_and_bad_bool_name_the_key() {
        let pairs = [("TERN_PORT", "70000"), ("TERN_FLAG", "yes")];
        let base = [
            ("TERN_SIZE", "1"),
            ("TERN_COUNT", "1"),
            ("TERN_OFFSET", "1"),
            ("TERN_RATIO", "1"),
            ("TERN_OTHER_FLAG", "true"),
        ];
        let mut first = env(&base);
        first.extend(env(&[pairs[0], ("TERN_FLAG", "true")]));
        let err = load::<Numbers>(None, first).unwrap_err().to_string();
        assert!(err.contains("port: number too large"), "{err}");
        let mut second = env(&base);
        second.extend(env(&[("TERN_PORT", "25"), pairs[1]]));
        let err = load::<Numbers>(None, second).unwrap_err().to_string();
        assert!(
            err.contains("flag: expected true or false, found \"yes\""),
            "{err}"
        );
    }

    #[test]
    fn file_integer_out_of_range_names_the_key() {
        let file = config_file("range", "[smtp]\nmax_errors = -1\n");
        let err = load::<Mta>(Some(&file), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("smtp.max_errors: invalid value: integer `-1`"),
            "{err}"
        );
    }

    /// Shaped like `tls::CertFiles`, which agents hold as `tls: Option<CertFiles>`.
    #[derive(Debug, Deserialize, PartialEq)]
    struct Cert {
        cert: PathBuf,
        key: PathBuf,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum Format {
        #[default]
        Text,
        Json,
    }

    #[derive(Debug, Deserialize)]
    struct Mta {
        tls: Option<Cert>,
        #[serde(default = "default_listen")]
        listen: SocketAddr,
        #[serde(default)]
        retry_schedule_secs: Vec<u64>,
        #[serde(default)]
        log_format: Format,
        #[serde(default)]
        smtp: SmtpLimits,
    }

    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 25))
    }

    #[test]
    fn optional_nested_struct_socket_addr_and_enum_from_env() {
        let env = env(&[
            ("TERN_TLS__CERT", "/etc/tern/cert.pem"),
            ("TERN_TLS__KEY", "/etc/tern/key.pem"),
            ("TERN_LISTEN", "127.0.0.1:2525"),
            ("TERN_LOG_FORMAT", "json"),
        ]);
        let cfg: Mta = load(None, env).unwrap();
        let want = Cert {
            cert: "/etc/tern/cert.pem".into(),
            key: "/etc/tern/key.pem".into(),
        };
        assert_eq!(cfg.tls, Some(want));
        assert_eq!(cfg.listen, SocketAddr::from(([127, 0, 0, 1], 2525)));
        assert_eq!(cfg.log_format, Format::Json);
        assert!(cfg.retry_schedule_secs.is_empty());
    }

    #[test]
    fn absent_optional_section_is_none_and_defaults_apply() {
        let cfg: Mta = load(None, Vec::new()).unwrap();
        assert_eq!(cfg.tls, None);
        assert_eq!(cfg.listen, default_listen());
        assert_eq!(cfg.log_format, Format::Text);
        assert_eq!(
            cfg.smtp.max_recipients,
            SmtpLimits::default().max_recipients
        );
    }

    #[test]
    fn empty_env_value_switches_off_an_optional_section_from_the_file() {
        let file = config_file("tls-off", "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        let on: Mta = load(Some(&file), Vec::new()).unwrap();
        assert!(on.tls.is_some());
        let off: Mta = load(Some(&file), env(&[("TERN_TLS", "")])).unwrap();
        assert_eq!(off.tls, None);
    }

    #[test]
    fn bad_socket_addr_and_unknown_variant_name_the_key() {
        let err = load::<Mta>(None, env(&[("TERN_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen: invalid socket address syntax"),
            "{err}"
        );
        let err = load::<Mta>(None, env(&[("TERN_LOG_FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_format: unknown variant `xml`"), "{err}");
    }

    #[test]
    fn lists_from_env_as_toml_array_or_comma_separated() {
        for text in ["[60, 300]", "60,300", " 60 , 300 "] {
            let cfg: Mta = load(None, env(&[("TERN_RETRY_SCHEDULE_SECS", text)])).unwrap();
            assert_eq!(cfg.retry_schedule_secs, vec![60, 300], "{text}");
        }
        let cfg: Mta = load(None, env(&[("TERN_RETRY_SCHEDULE_SECS", "")])).unwrap();
        assert!(cfg.retry_schedule_secs.is_empty());
    }

    #[test]
    fn bad_list_item_names_its_index() {
        let err = load::<Mta>(None, env(&[("TERN_RETRY_SCHEDULE_SECS", "60,5m")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retry_schedule_secs[1]: invalid digit"),
            "{err}"
        );
        let err = load::<Mta>(None, env(&[("TERN_RETRY_SCHEDULE_SECS", "[60, ")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retry_schedule_secs: \"[60, \" is not a TOML array"),
            "{err}"
        );
    }

    #[test]
    fn list_of_strings_from_env() {
        #[derive(Debug, Deserialize)]
        struct Names {
            names: Vec<String>,
        }
        let cfg: Names = load(None, env(&[("TERN_NAMES", "mx.example, 42,true")])).unwrap();
        assert_eq!(cfg.names, ["mx.example", "42", "true"]);
        let cfg: Names = load(None, env(&[("TERN_NAMES", r#"["a,b", "c"]"#)])).unwrap();
        assert_eq!(cfg.names, ["a,b", "c"]);
    }

    #[test]
    fn file_values_and_env_overrides_combine() {
        let file = config_file(
            "combined",
            "listen = \"0.0.0.0:2525\"\nretry_schedule_secs = [1, 2, 3]\nlog_format = \"json\"\n\
             [tls]\ncert = \"file-cert.pem\"\nkey = \"file-key.pem\"\n\
             [smtp]\nmax_recipients = 7\nmax_errors = 3\n",
        );
        let env = env(&[
            ("TERN_TLS__KEY", "env-key.pem"),
            ("TERN_SMTP__MAX_ERRORS", "9"),
            ("TERN_SMTP__IDLE_TIMEOUT_SECS", "600"),
        ]);
        let cfg: Mta = load(Some(&file), env).unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("file-cert.pem"));
        assert_eq!(tls.key, PathBuf::from("env-key.pem"));
        assert_eq!(cfg.listen, SocketAddr::from(([0, 0, 0, 0], 2525)));
        assert_eq!(cfg.retry_schedule_secs, vec![1, 2, 3]);
        assert_eq!(cfg.log_format, Format::Json);
        assert_eq!(cfg.smtp.max_recipients, 7);
        assert_eq!(cfg.smtp.max_errors, 9);
        assert_eq!(cfg.smtp.idle_timeout_secs, 600);
        assert_eq!(
            cfg.smtp.max_connections,
            SmtpLimits::default().max_connections
        );
    }

    #[test]
    fn whole_nested_struct_from_an_inline_table() {
        let env = env(&[("TERN_TLS", r#"{ cert = "c.pem", key = "k.pem" }"#)]);
        let cfg: Mta = load(None, env).unwrap();
        assert_eq!(
            cfg.tls,
            Some(Cert {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
    }

    #[test]
    fn keys_are_lowercased_and_malformed_names_ignored() {
        let env = env(&[
            ("TERN_Admin_Token", "t"),
            ("TERN_HOSTNAME", "mx"),
            ("TERN___X", "ignored"),
            ("TERN_A____B", "ignored"),
            ("tern_hostname", "ignored"),
        ]);
        let cfg: Agent = load(None, env).unwrap();
        assert_eq!(cfg.admin_token, "t");
        assert_eq!(cfg.hostname, "mx");
    }
}
