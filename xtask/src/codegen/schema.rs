//! Kafka's message schema files, parsed into a model the generator walks.
//!
//! The files are JSON with `//` line comments. Only the facts the generator needs are
//! kept: names, types, version ranges, tags, defaults.

use std::fmt;

use serde_json::Value;

/// A set of versions: `none`, `N`, `N+` or `N-M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Lowest version, or `None` for the empty set.
    pub min: Option<i16>,
    /// Highest version (inclusive), or `None` for open-ended.
    pub max: Option<i16>,
}

impl Versions {
    pub const NONE: Versions = Versions { min: None, max: None };

    pub fn parse(s: &str) -> Result<Versions, String> {
        let s = s.trim();
        let num = |t: &str| t.trim().parse::<i16>().map_err(|e| format!("bad version {t:?}: {e}"));
        if s == "none" {
            Ok(Versions::NONE)
        } else if let Some(lo) = s.strip_suffix('+') {
            Ok(Versions { min: Some(num(lo)?), max: None })
        } else if let Some((lo, hi)) = s.split_once('-') {
            Ok(Versions { min: Some(num(lo)?), max: Some(num(hi)?) })
        } else {
            let v = num(s)?;
            Ok(Versions { min: Some(v), max: Some(v) })
        }
    }

    pub fn is_empty(&self) -> bool {
        self.min.is_none()
    }

    pub fn contains(&self, v: i16) -> bool {
        match self.min {
            None => false,
            Some(lo) => v >= lo && self.max.is_none_or(|hi| v <= hi),
        }
    }

    /// The intersection with a closed range `[lo, hi]`.
    pub fn within(&self, lo: i16, hi: i16) -> Versions {
        match self.min {
            None => Versions::NONE,
            Some(min) => {
                let a = min.max(lo);
                let b = self.max.map_or(hi, |m| m.min(hi));
                if a > b { Versions::NONE } else { Versions { min: Some(a), max: Some(b) } }
            }
        }
    }

    /// A Rust boolean expression over `version` that is true exactly for the versions of
    /// `self` within `[lo, hi]`, or `None` when it is true for all of them.
    pub fn condition(&self, lo: i16, hi: i16) -> Option<String> {
        let w = self.within(lo, hi);
        match (w.min, w.max) {
            (None, _) => Some("false".into()),
            (Some(a), Some(b)) if a <= lo && b >= hi => None,
            (Some(a), Some(b)) if a == b => Some(format!("version == {a}")),
            (Some(a), Some(b)) if a <= lo => Some(format!("version <= {b}")),
            (Some(a), Some(b)) if b >= hi => Some(format!("version >= {a}")),
            (Some(a), Some(b)) => Some(format!("({a}..={b}).contains(&version)")),
            (Some(_), None) => unreachable!("within() always closes the range"),
        }
    }
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (None, _) => f.write_str("none"),
            (Some(a), None) => write!(f, "{a}+"),
            (Some(a), Some(b)) if a == b => write!(f, "{a}"),
            (Some(a), Some(b)) => write!(f, "{a}-{b}"),
        }
    }
}

/// A field's wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    String,
    Bytes,
    Records,
    Uuid,
    Struct(String),
    Array(Box<FieldType>),
}

impl FieldType {
    pub fn parse(s: &str) -> FieldType {
        if let Some(inner) = s.strip_prefix("[]") {
            return FieldType::Array(Box::new(FieldType::parse(inner)));
        }
        match s {
            "bool" => FieldType::Bool,
            "int8" => FieldType::Int8,
            "int16" => FieldType::Int16,
            "uint16" => FieldType::Uint16,
            "int32" => FieldType::Int32,
            "uint32" => FieldType::Uint32,
            "int64" => FieldType::Int64,
            "float64" => FieldType::Float64,
            "string" => FieldType::String,
            "bytes" => FieldType::Bytes,
            "records" => FieldType::Records,
            "uuid" => FieldType::Uuid,
            other => FieldType::Struct(other.to_owned()),
        }
    }

    /// The struct this type names, directly or as an array element.
    pub fn struct_name(&self) -> Option<&str> {
        match self {
            FieldType::Struct(n) => Some(n),
            FieldType::Array(t) => t.struct_name(),
            _ => None,
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Bool => f.write_str("bool"),
            FieldType::Int8 => f.write_str("int8"),
            FieldType::Int16 => f.write_str("int16"),
            FieldType::Uint16 => f.write_str("uint16"),
            FieldType::Int32 => f.write_str("int32"),
            FieldType::Uint32 => f.write_str("uint32"),
            FieldType::Int64 => f.write_str("int64"),
            FieldType::Float64 => f.write_str("float64"),
            FieldType::String => f.write_str("string"),
            FieldType::Bytes => f.write_str("bytes"),
            FieldType::Records => f.write_str("records"),
            FieldType::Uuid => f.write_str("uuid"),
            FieldType::Struct(n) => f.write_str(n),
            FieldType::Array(t) => write!(f, "[]{t}"),
        }
    }
}

/// One field of a message or struct.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub versions: Versions,
    pub nullable: Versions,
    pub tagged: Versions,
    pub tag: Option<u32>,
    /// The `default` as written in the schema (strings unquoted).
    pub default: Option<String>,
    pub ignorable: bool,
    /// A field-level override of the message's flexible versions.
    pub flexible_override: Option<Versions>,
    pub entity_type: Option<String>,
    pub map_key: bool,
    /// Fields of the struct this field defines inline, if any.
    pub fields: Option<Vec<Field>>,
}

/// A struct: the message itself, an inline struct, or a common struct.
#[derive(Debug, Clone)]
pub struct StructDef {
    pub name: String,
    pub fields: Vec<Field>,
}

/// What a schema file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Header,
    Data,
}

/// One schema file.
#[derive(Debug, Clone)]
pub struct Schema {
    pub file: String,
    pub kind: Kind,
    pub name: String,
    pub api_key: Option<i16>,
    pub valid: (i16, i16),
    pub flexible: Versions,
    pub deprecated: Option<Versions>,
    pub latest_unstable: bool,
    pub listeners: Vec<String>,
    pub fields: Vec<Field>,
    pub common_structs: Vec<StructDef>,
}

/// Removes `//` comments (outside string literals) so the text parses as JSON.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let bytes = line.as_bytes();
        let mut in_str = false;
        let mut escaped = false;
        let mut cut = line.len();
        for (i, &b) in bytes.iter().enumerate() {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_str = true;
            } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
                cut = i;
                break;
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn str_field<'a>(v: &'a Value, key: &str, ctx: &str) -> Result<&'a str, String> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| format!("{ctx}: missing string `{key}`"))
}

fn opt_versions(v: &Value, key: &str, ctx: &str) -> Result<Option<Versions>, String> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Versions::parse(s).map(Some).map_err(|e| format!("{ctx}.{key}: {e}")),
        Some(other) => Err(format!("{ctx}.{key}: expected a string, got {other}")),
    }
}

fn parse_fields(v: &Value, ctx: &str) -> Result<Vec<Field>, String> {
    let Some(arr) = v.get("fields") else { return Ok(Vec::new()) };
    let arr = arr.as_array().ok_or_else(|| format!("{ctx}: `fields` is not an array"))?;
    arr.iter().map(|f| parse_field(f, ctx)).collect()
}

fn parse_field(v: &Value, ctx: &str) -> Result<Field, String> {
    let name = str_field(v, "name", ctx)?.to_owned();
    let ctx = format!("{ctx}.{name}");
    let ty = FieldType::parse(str_field(v, "type", &ctx)?);
    let versions = Versions::parse(str_field(v, "versions", &ctx)?)?;
    let default = match v.get("default") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(format!("{ctx}: unsupported default {other}")),
    };
    let tag = match v.get("tag") {
        None => None,
        Some(t) => Some(
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| format!("{ctx}: bad tag {t}"))?,
        ),
    };
    let tagged = opt_versions(v, "taggedVersions", &ctx)?.unwrap_or(Versions::NONE);
    if tag.is_some() == tagged.is_empty() {
        return Err(format!("{ctx}: `tag` and `taggedVersions` must come together"));
    }
    let fields = if v.get("fields").is_some() { Some(parse_fields(v, &ctx)?) } else { None };
    Ok(Field {
        name,
        ty,
        versions,
        nullable: opt_versions(v, "nullableVersions", &ctx)?.unwrap_or(Versions::NONE),
        tagged,
        tag,
        default,
        ignorable: v.get("ignorable").and_then(Value::as_bool).unwrap_or(false),
        flexible_override: opt_versions(v, "flexibleVersions", &ctx)?,
        entity_type: v.get("entityType").and_then(Value::as_str).map(str::to_owned),
        map_key: v.get("mapKey").and_then(Value::as_bool).unwrap_or(false),
        fields,
    })
}

/// Parses one schema file's text.
pub fn parse(file: &str, text: &str) -> Result<Schema, String> {
    let v: Value = serde_json::from_str(&strip_comments(text)).map_err(|e| format!("{file}: {e}"))?;
    let name = str_field(&v, "name", file)?.to_owned();
    let kind = match str_field(&v, "type", file)? {
        "request" => Kind::Request,
        "response" => Kind::Response,
        "header" => Kind::Header,
        "data" => Kind::Data,
        other => return Err(format!("{file}: unknown message type {other:?}")),
    };
    let valid = Versions::parse(str_field(&v, "validVersions", file)?)?;
    let (Some(lo), Some(hi)) = (valid.min, valid.max) else {
        return Err(format!("{file}: validVersions must be a closed range"));
    };
    let common_structs = match v.get("commonStructs") {
        None => Vec::new(),
        Some(arr) => arr
            .as_array()
            .ok_or_else(|| format!("{file}: commonStructs is not an array"))?
            .iter()
            .map(|s| {
                let sname = str_field(s, "name", file)?.to_owned();
                Ok(StructDef { fields: parse_fields(s, &format!("{file}:{sname}"))?, name: sname })
            })
            .collect::<Result<_, String>>()?,
    };
    Ok(Schema {
        file: file.to_owned(),
        kind,
        api_key: v.get("apiKey").and_then(Value::as_i64).map(|k| k as i16),
        valid: (lo, hi),
        flexible: Versions::parse(str_field(&v, "flexibleVersions", file)?)?,
        deprecated: opt_versions(&v, "deprecatedVersions", file)?,
        latest_unstable: v.get("latestVersionUnstable").and_then(Value::as_bool).unwrap_or(false),
        listeners: v
            .get("listeners")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        fields: parse_fields(&v, &format!("{file}:{name}"))?,
        common_structs,
        name,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn versions_parse_and_conditions() {
        let v = Versions::parse("3+").unwrap();
        assert_eq!(v.condition(0, 11).as_deref(), Some("version >= 3"));
        assert_eq!(v.condition(3, 11), None);
        assert_eq!(Versions::parse("0-4").unwrap().condition(0, 11).as_deref(), Some("version <= 4"));
        assert_eq!(Versions::parse("2-4").unwrap().condition(0, 11).as_deref(), Some("(2..=4).contains(&version)"));
        assert_eq!(Versions::parse("none").unwrap().condition(0, 11).as_deref(), Some("false"));
        assert_eq!(Versions::parse("12+").unwrap().condition(0, 11).as_deref(), Some("false"));
    }

    #[test]
    fn comments_are_stripped_outside_strings() {
        let t = "{ // c\n \"a\": \"http://x\" // d\n}";
        let v: Value = serde_json::from_str(&strip_comments(t)).unwrap();
        assert_eq!(v["a"], "http://x");
    }
}
