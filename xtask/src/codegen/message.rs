//! Generates one Rust module per schema file: a struct per message and nested struct,
//! with version-aware `write`/`read`, defaults, builders and random-value generators.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::schema::{Field, FieldType, Kind, Schema, StructDef, Versions};

/// Rust keywords that appear as field names.
const KEYWORDS: &[&str] = &["type", "match", "ref", "self", "move", "mod", "in", "as", "fn", "use", "where", "loop"];

/// `ThrottleTimeMs` -> `throttle_time_ms`, `IsKRaftController` -> `is_k_raft_controller`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Rust identifier of a field, and the name used in builder methods.
fn field_ident(f: &Field) -> (String, String) {
    let s = snake_case(&f.name);
    if KEYWORDS.contains(&s.as_str()) { (format!("r#{s}"), s) } else { (s.clone(), s) }
}

/// Everything the generator knows about the file being generated.
struct Ctx<'a> {
    schema: &'a Schema,
    lo: i16,
    hi: i16,
    /// Struct name -> definition, for all structs of the file.
    structs: BTreeMap<String, StructDef>,
}

impl Ctx<'_> {
    fn cond(&self, v: &Versions) -> Option<String> {
        v.condition(self.lo, self.hi)
    }

    /// Condition for `set` assuming `version` is already known to be in `domain`.
    fn cond_within(&self, set: &Versions, domain: &Versions) -> Option<String> {
        let d = domain.within(self.lo, self.hi);
        let s = set.within(self.lo, self.hi);
        let (Some(dlo), Some(dhi)) = (d.min, d.max) else { return Some("false".into()) };
        let covers = (dlo..=dhi).all(|v| s.contains(v));
        let disjoint = (dlo..=dhi).all(|v| !s.contains(v));
        if covers {
            None
        } else if disjoint {
            Some("false".into())
        } else {
            self.cond(set)
        }
    }

    fn has_flexible(&self) -> bool {
        !self.schema.flexible.within(self.lo, self.hi).is_empty()
    }

    fn what(&self, owner: &str, field: &str) -> String {
        if owner == self.schema.name {
            format!("\"{owner}.{field}\"")
        } else {
            format!("\"{}::{owner}.{field}\"", self.schema.name)
        }
    }
}

/// Whether `f` can be null in any version it exists in.
fn nullable_any(ctx: &Ctx<'_>, f: &Field) -> bool {
    let present = f.versions.within(ctx.lo, ctx.hi);
    match (present.min, present.max) {
        (Some(a), Some(b)) => (a..=b).any(|v| f.nullable.contains(v)),
        _ => false,
    }
}

/// The versions in which `f` is a regular (not tagged) field.
fn regular_versions(f: &Field) -> Result<Versions, String> {
    if f.tagged.is_empty() {
        return Ok(f.versions);
    }
    let (vmin, tmin) = (f.versions.min, f.tagged.min);
    if f.tagged.max.is_none() && f.versions.max.is_none() {
        if tmin <= vmin {
            return Ok(Versions::NONE);
        }
        if let (Some(v), Some(t)) = (vmin, tmin) {
            return Ok(Versions { min: Some(v), max: Some(t - 1) });
        }
    }
    Err(format!(
        "field {}: unsupported combination of versions {} and tagged versions {}",
        f.name, f.versions, f.tagged
    ))
}

fn base_type(ty: &FieldType) -> String {
    match ty {
        FieldType::Bool => "bool".into(),
        FieldType::Int8 => "i8".into(),
        FieldType::Int16 => "i16".into(),
        FieldType::Uint16 => "u16".into(),
        FieldType::Int32 => "i32".into(),
        FieldType::Uint32 => "u32".into(),
        FieldType::Int64 => "i64".into(),
        FieldType::Float64 => "f64".into(),
        FieldType::String => "String".into(),
        FieldType::Bytes | FieldType::Records => "Bytes".into(),
        FieldType::Uuid => "Uuid".into(),
        FieldType::Struct(n) => n.clone(),
        FieldType::Array(t) => format!("Vec<{}>", base_type(t)),
    }
}

fn rust_type(ctx: &Ctx<'_>, f: &Field) -> String {
    let t = base_type(&f.ty);
    if nullable_any(ctx, f) { format!("Option<{t}>") } else { t }
}

fn parse_int(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16)
    } else {
        body.parse::<i64>()
    }
    .map_err(|e| format!("bad integer default {s:?}: {e}"))?;
    Ok(if neg { -v } else { v })
}

/// The default of a non-null value of `ty`, from the schema's `default` text.
fn default_value(ty: &FieldType, default: Option<&str>) -> Result<String, String> {
    let d = default.filter(|d| !d.is_empty());
    Ok(match ty {
        FieldType::Bool => match d {
            None | Some("false") => "false".into(),
            Some("true") => "true".into(),
            Some(o) => return Err(format!("bad bool default {o:?}")),
        },
        FieldType::Int8
        | FieldType::Int16
        | FieldType::Uint16
        | FieldType::Int32
        | FieldType::Uint32
        | FieldType::Int64 => match d {
            None => "0".into(),
            Some(s) => parse_int(s)?.to_string(),
        },
        FieldType::Float64 => match d {
            None => "0.0".into(),
            Some(s) => format!("{:?}", s.parse::<f64>().map_err(|e| format!("bad float default {s:?}: {e}"))?),
        },
        FieldType::String => match d {
            None => "String::new()".into(),
            Some(s) => format!("String::from({s:?})"),
        },
        FieldType::Bytes | FieldType::Records => "Bytes::new()".into(),
        FieldType::Uuid => "Uuid::NIL".into(),
        FieldType::Struct(n) => format!("{n}::default()"),
        FieldType::Array(t) => format!("Vec::<{}>::new()", base_type(t)),
    })
}

/// The default expression of a field, with Kafka's rules: an explicit `"null"` is
/// `None`; `records` are null unless said otherwise; other nullable fields default to
/// their non-null default.
fn default_expr(ctx: &Ctx<'_>, f: &Field) -> Result<String, String> {
    let nullable = nullable_any(ctx, f);
    if f.default.as_deref() == Some("null") {
        if !nullable {
            return Err(format!("field {}: default null on a non-nullable field", f.name));
        }
        return Ok("None".into());
    }
    if nullable && f.ty == FieldType::Records && f.default.is_none() {
        return Ok("None".into());
    }
    let v = default_value(&f.ty, f.default.as_deref())?;
    Ok(if nullable { format!("Some({v})") } else { v })
}

fn default_doc(ctx: &Ctx<'_>, f: &Field) -> Option<String> {
    match f.default.as_deref() {
        Some(d) => Some(d.to_owned()),
        None if nullable_any(ctx, f) && f.ty == FieldType::Records => Some("null".into()),
        None => None,
    }
}

fn compact_expr(ctx: &Ctx<'_>, f: &Field) -> String {
    match f.flexible_override {
        Some(v) => ctx.cond(&v).unwrap_or_else(|| "true".into()),
        None if ctx.has_flexible() => "flexible".into(),
        None => "false".into(),
    }
}

/// Code that writes the non-null value `v` (an expression of type `&T`) to `buf`.
fn encode_value(ty: &FieldType, v: &str, buf: &str, compact: &str, what: &str) -> String {
    match ty {
        FieldType::Bool => format!("wire::put_bool({buf}, *{v});"),
        FieldType::Int8 => format!("{buf}.put_i8(*{v});"),
        FieldType::Int16 => format!("{buf}.put_i16(*{v});"),
        FieldType::Uint16 => format!("{buf}.put_u16(*{v});"),
        FieldType::Int32 => format!("{buf}.put_i32(*{v});"),
        FieldType::Uint32 => format!("{buf}.put_u32(*{v});"),
        FieldType::Int64 => format!("{buf}.put_i64(*{v});"),
        FieldType::Float64 => format!("{buf}.put_f64(*{v});"),
        FieldType::String => format!("wire::put_string({buf}, {v}, {compact}, {what})?;"),
        FieldType::Bytes | FieldType::Records => format!("wire::put_bytes({buf}, {v}, {compact}, {what})?;"),
        FieldType::Uuid => format!("wire::put_uuid({buf}, {v});"),
        FieldType::Struct(_) => format!("({v}).write({buf}, version)?;"),
        FieldType::Array(t) => format!(
            "wire::put_array_len({buf}, Some(({v}).len()), {compact}, {what})?; for e in ({v}).iter() {{ {} }}",
            encode_value(t, "e", buf, compact, what)
        ),
    }
}

/// Code that writes the nullable value `v` (an expression of type `&Option<T>`).
fn encode_nullable(ty: &FieldType, v: &str, buf: &str, compact: &str, what: &str) -> String {
    match ty {
        FieldType::String => format!("wire::put_nullable_string({buf}, ({v}).as_deref(), {compact}, {what})?;"),
        FieldType::Bytes | FieldType::Records => {
            format!("wire::put_nullable_bytes({buf}, ({v}).as_deref(), {compact}, {what})?;")
        }
        FieldType::Array(_) => format!(
            "match {v} {{ None => wire::put_array_len({buf}, None, {compact}, {what})?, Some(v) => {{ {} }} }}",
            encode_value(ty, "v", buf, compact, what)
        ),
        FieldType::Struct(_) => format!(
            "match {v} {{ None => {buf}.put_i8(-1), Some(v) => {{ {buf}.put_i8(1); v.write({buf}, version)?; }} }}"
        ),
        other => format!("compile_error!(\"nullable {other} is not supported\");"),
    }
}

/// Code that writes field `f` of `self` for the current version.
fn encode_field(ctx: &Ctx<'_>, f: &Field, buf: &str, what: &str) -> String {
    let (id, _) = field_ident(f);
    let compact = compact_expr(ctx, f);
    let v = format!("&self.{id}");
    if !nullable_any(ctx, f) {
        return encode_value(&f.ty, &v, buf, &compact, what);
    }
    let nullable_code = encode_nullable(&f.ty, &v, buf, &compact, what);
    let strict = format!(
        "let v = self.{id}.as_ref().ok_or(EncodeError::NullNotAllowed {{ field: {what}, version }})?; {}",
        encode_value(&f.ty, "v", buf, &compact, what)
    );
    match ctx.cond_within(&f.nullable, &f.versions) {
        None => nullable_code,
        Some(c) if c == "false" => strict,
        Some(c) => format!("if {c} {{ {nullable_code} }} else {{ {strict} }}"),
    }
}

/// An expression that reads a non-null value of `ty` from `buf` (a `&mut Bytes`).
fn decode_value(ty: &FieldType, buf: &str, compact: &str, what: &str) -> String {
    match ty {
        FieldType::Bool => format!("wire::get_bool({buf}, {what})?"),
        FieldType::Int8 => format!("wire::get_i8({buf}, {what})?"),
        FieldType::Int16 => format!("wire::get_i16({buf}, {what})?"),
        FieldType::Uint16 => format!("wire::get_u16({buf}, {what})?"),
        FieldType::Int32 => format!("wire::get_i32({buf}, {what})?"),
        FieldType::Uint32 => format!("wire::get_u32({buf}, {what})?"),
        FieldType::Int64 => format!("wire::get_i64({buf}, {what})?"),
        FieldType::Float64 => format!("wire::get_f64({buf}, {what})?"),
        FieldType::String => format!("wire::get_string({buf}, {compact}, {what})?"),
        FieldType::Bytes | FieldType::Records => format!("wire::get_bytes({buf}, {compact}, {what})?"),
        FieldType::Uuid => format!("wire::get_uuid({buf}, {what})?"),
        FieldType::Struct(n) => format!("{n}::read({buf}, version)?"),
        FieldType::Array(t) => format!(
            "{{ let n = wire::get_required_array_len({buf}, {compact}, {what})?; let mut v = wire::vec_for(n); for _ in 0..n {{ v.push({}); }} v }}",
            decode_value(t, buf, compact, what)
        ),
    }
}

fn decode_nullable(ty: &FieldType, buf: &str, compact: &str, what: &str) -> String {
    match ty {
        FieldType::String => format!("wire::get_nullable_string({buf}, {compact}, {what})?"),
        FieldType::Bytes | FieldType::Records => format!("wire::get_nullable_bytes({buf}, {compact}, {what})?"),
        FieldType::Array(t) => format!(
            "match wire::get_array_len({buf}, {compact}, {what})? {{ None => None, Some(n) => {{ let mut v = wire::vec_for(n); for _ in 0..n {{ v.push({}); }} Some(v) }} }}",
            decode_value(t, buf, compact, what)
        ),
        FieldType::Struct(n) => {
            format!("if wire::get_i8({buf}, {what})? < 0 {{ None }} else {{ Some({n}::read({buf}, version)?) }}")
        }
        other => format!("compile_error!(\"nullable {other} is not supported\")"),
    }
}

/// An expression that reads field `f` for the current version.
fn decode_field(ctx: &Ctx<'_>, f: &Field, buf: &str, what: &str) -> String {
    let compact = compact_expr(ctx, f);
    if !nullable_any(ctx, f) {
        return decode_value(&f.ty, buf, &compact, what);
    }
    let nullable_code = decode_nullable(&f.ty, buf, &compact, what);
    let strict = format!("Some({})", decode_value(&f.ty, buf, &compact, what));
    match ctx.cond_within(&f.nullable, &f.versions) {
        None => nullable_code,
        Some(c) if c == "false" => strict,
        Some(c) => format!("if {c} {{ {nullable_code} }} else {{ {strict} }}"),
    }
}

/// An expression giving a random non-null value of `ty`.
fn arbitrary_value(ty: &FieldType) -> String {
    match ty {
        FieldType::Bool
        | FieldType::Int8
        | FieldType::Int16
        | FieldType::Uint16
        | FieldType::Int32
        | FieldType::Uint32
        | FieldType::Int64 => "u.arbitrary()?".into(),
        FieldType::Float64 => "crate::testing::arb_f64(u)?".into(),
        FieldType::String => "crate::testing::arb_string(u)?".into(),
        FieldType::Bytes | FieldType::Records => "crate::testing::arb_bytes(u)?".into(),
        FieldType::Uuid => "Uuid(u.arbitrary()?)".into(),
        FieldType::Struct(n) => format!("{n}::arbitrary(u, version)?"),
        FieldType::Array(t) => format!("crate::testing::arb_vec(u, |u| Ok({}))?", arbitrary_value(t)),
    }
}

fn arbitrary_field(ctx: &Ctx<'_>, f: &Field) -> Result<String, String> {
    let value = arbitrary_value(&f.ty);
    let value = if nullable_any(ctx, f) {
        match ctx.cond_within(&f.nullable, &f.versions) {
            None => format!("if u.arbitrary()? {{ None }} else {{ Some({value}) }}"),
            Some(c) if c == "false" => format!("Some({value})"),
            Some(c) => format!("if {c} && u.arbitrary()? {{ None }} else {{ Some({value}) }}"),
        }
    } else {
        value
    };
    Ok(match ctx.cond(&f.versions) {
        None => value,
        Some(c) => format!("if {c} {{ {value} }} else {{ {} }}", default_expr(ctx, f)?),
    })
}

fn field_doc(ctx: &Ctx<'_>, f: &Field) -> String {
    let mut d = format!("`{}`: `{}`, versions {}", f.name, f.ty, f.versions);
    if nullable_any(ctx, f) {
        let _ = write!(d, ", nullable in versions {}", f.nullable);
    }
    if let Some(tag) = f.tag {
        let _ = write!(d, ", tagged (tag {tag}) in versions {}", f.tagged);
    }
    if let Some(def) = default_doc(ctx, f) {
        let _ = write!(d, ", default `{def}`");
    }
    if f.ignorable {
        d.push_str(", ignorable");
    }
    if let Some(e) = &f.entity_type {
        let _ = write!(d, ", entity type `{e}`");
    }
    if f.map_key {
        d.push_str(", map key");
    }
    if let Some(fx) = f.flexible_override {
        let _ = write!(d, ", flexible (compact) encoding in versions {fx}");
    }
    d.push('.');
    d
}

/// Generates one struct: declaration, `Default`, builders, `write`, `read`, `arbitrary`.
fn gen_struct(ctx: &Ctx<'_>, def: &StructDef, out: &mut String) -> Result<(), String> {
    let name = &def.name;
    let top = *name == ctx.schema.name;
    let vis = if top { "pub" } else { "pub(crate)" };
    let flex = ctx.has_flexible();
    let flex_cond = ctx.cond(&ctx.schema.flexible).unwrap_or_else(|| "true".into());

    // Declaration.
    if top {
        let _ = writeln!(out, "/// `{name}`: {}.", message_summary(ctx.schema));
    } else {
        let _ = writeln!(out, "/// `{name}`, a structure of [`{}`], versions {}-{}.", ctx.schema.name, ctx.lo, ctx.hi);
    }
    out.push_str("#[derive(Debug, Clone, PartialEq)]\n#[non_exhaustive]\n");
    let _ = writeln!(out, "pub struct {name} {{");
    for f in &def.fields {
        let (id, _) = field_ident(f);
        let _ = writeln!(out, "/// {}\npub {id}: {},", field_doc(ctx, f), rust_type(ctx, f));
    }
    if flex {
        out.push_str("/// Tagged fields this crate does not know, kept so they are written back unchanged.\n");
        out.push_str("pub unknown_tagged_fields: Vec<RawTaggedField>,\n");
    }
    out.push_str("}\n\n");

    // Default.
    let _ = writeln!(out, "impl Default for {name} {{\nfn default() -> Self {{\nSelf {{");
    for f in &def.fields {
        let _ = writeln!(out, "{}: {},", field_ident(f).0, default_expr(ctx, f)?);
    }
    if flex {
        out.push_str("unknown_tagged_fields: Vec::new(),\n");
    }
    out.push_str("}\n}\n}\n\n");

    // Builders, write, read.
    let _ = writeln!(out, "impl {name} {{");
    for f in &def.fields {
        let (id, plain) = field_ident(f);
        // Intra-doc links cannot name raw identifiers (`r#type`).
        let doc = if id.starts_with("r#") {
            format!("Sets the `{plain}` field.")
        } else {
            format!("Sets [`{name}::{plain}`](Self::{id}).")
        };
        let _ = writeln!(
            out,
            "/// {doc}\n#[must_use]\npub fn with_{plain}(mut self, value: {}) -> Self {{ self.{id} = value; self }}",
            rust_type(ctx, f)
        );
    }

    // write
    out.push_str(
        "#[allow(unused_variables)]\npub(crate) fn write(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {\n",
    );
    if flex {
        let _ = writeln!(out, "let flexible = {flex_cond};");
    }
    for f in &def.fields {
        let (id, _) = field_ident(f);
        let what = ctx.what(name, &snake_case(&f.name));
        if !f.ignorable {
            match ctx.cond(&f.versions) {
                None => {}
                Some(c) => {
                    let neg = if c == "false" { "true".to_owned() } else { format!("!({c})") };
                    let _ = writeln!(
                        out,
                        "if {neg} && self.{id} != {} {{ return Err(EncodeError::FieldNotInVersion {{ field: {what}, version }}); }}",
                        default_expr(ctx, f)?
                    );
                }
            }
        }
        let regular = regular_versions(f)?;
        let code = encode_field(ctx, f, "buf", &what);
        match ctx.cond(&regular) {
            None => {
                let _ = writeln!(out, "{code}");
            }
            Some(c) if c == "false" => {}
            Some(c) => {
                let _ = writeln!(out, "if {c} {{ {code} }}");
            }
        }
    }
    if flex {
        let mut tagged: Vec<&Field> = def.fields.iter().filter(|f| f.tag.is_some()).collect();
        tagged.sort_by_key(|f| f.tag);
        out.push_str("if flexible {\n");
        out.push_str("let mut count = self.unknown_tagged_fields.len();\n");
        for (i, f) in tagged.iter().enumerate() {
            let (id, _) = field_ident(f);
            let present = match ctx.cond(&f.tagged) {
                None => format!("self.{id} != {}", default_expr(ctx, f)?),
                Some(c) => format!("({c}) && self.{id} != {}", default_expr(ctx, f)?),
            };
            let _ = writeln!(out, "let tagged_{i} = {present};\ncount += usize::from(tagged_{i});");
        }
        let struct_what = format!("\"{}\"", name);
        let _ = writeln!(
            out,
            "wire::put_uvarint(buf, u32::try_from(count).map_err(|_| EncodeError::TooLong {{ what: {struct_what}, length: count, max: u32::MAX as usize }})?);"
        );
        if tagged.is_empty() {
            out.push_str("for f in &self.unknown_tagged_fields { wire::put_tagged_field(buf, f.tag, &f.data); }\n");
        } else {
            out.push_str("let mut unknown = self.unknown_tagged_fields.iter().peekable();\n");
            for (i, f) in tagged.iter().enumerate() {
                let tag = f.tag.unwrap_or_default();
                let what = ctx.what(name, &snake_case(&f.name));
                let _ = writeln!(
                    out,
                    "if tagged_{i} {{ wire::put_unknown_tagged_below(buf, &mut unknown, {tag}); let mut data = BytesMut::new(); {{ let buf = &mut data; {} }} wire::put_tagged_field(buf, {tag}, &data); }}",
                    encode_field(ctx, f, "buf", &what)
                );
            }
            out.push_str("wire::put_unknown_tagged_below(buf, &mut unknown, u64::MAX);\n");
        }
        out.push_str("}\n");
    }
    out.push_str("Ok(())\n}\n\n");

    // read
    let _ = writeln!(
        out,
        "#[allow(unused_variables)]\npub(crate) fn read(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{"
    );
    if flex {
        let _ = writeln!(out, "let flexible = {flex_cond};");
    }
    for f in &def.fields {
        let (_, plain) = field_ident(f);
        let what = ctx.what(name, &snake_case(&f.name));
        let regular = regular_versions(f)?;
        let mutability = if f.tag.is_some() { "mut " } else { "" };
        let value = match ctx.cond(&regular) {
            None => decode_field(ctx, f, "buf", &what),
            Some(c) if c == "false" => default_expr(ctx, f)?,
            Some(c) => {
                format!("if {c} {{ {} }} else {{ {} }}", decode_field(ctx, f, "buf", &what), default_expr(ctx, f)?)
            }
        };
        let _ = writeln!(out, "let {mutability}field_{plain} = {value};");
    }
    if flex {
        let struct_what = format!("\"{}\"", name);
        out.push_str("let mut unknown_tagged_fields = Vec::new();\n");
        let _ = writeln!(
            out,
            "if flexible {{ let n = wire::get_tagged_count(buf, {struct_what})?; for _ in 0..n {{ let (tag, mut data) = wire::get_tagged_field(buf, {struct_what})?; match tag {{"
        );
        for f in def.fields.iter().filter(|f| f.tag.is_some()) {
            let (_, plain) = field_ident(f);
            let what = ctx.what(name, &snake_case(&f.name));
            let guard = match ctx.cond(&f.tagged) {
                None => String::new(),
                Some(c) => format!(" if {c}"),
            };
            let _ = writeln!(
                out,
                "{}{guard} => {{ field_{plain} = {{ let buf = &mut data; {} }}; wire::expect_consumed(&data, {what})?; }}",
                f.tag.unwrap_or_default(),
                decode_field(ctx, f, "buf", &what)
            );
        }
        out.push_str("_ => unknown_tagged_fields.push(RawTaggedField { tag, data }),\n}\n}\n}\n");
    }
    out.push_str("Ok(Self {\n");
    for f in &def.fields {
        let (id, plain) = field_ident(f);
        let _ = writeln!(out, "{id}: field_{plain},");
    }
    if flex {
        out.push_str("unknown_tagged_fields,\n");
    }
    out.push_str("})\n}\n}\n\n");

    // arbitrary
    let known_tags: Vec<String> = def.fields.iter().filter_map(|f| f.tag).map(|t| t.to_string()).collect::<Vec<_>>();
    let _ = writeln!(
        out,
        "#[cfg(any(test, feature = \"arbitrary\"))]\nimpl {name} {{\n/// A random value that is valid for `version`.\n#[allow(unused_variables)]\n{vis} fn arbitrary(u: &mut arbitrary::Unstructured<'_>, version: i16) -> arbitrary::Result<Self> {{"
    );
    if flex {
        let _ = writeln!(out, "let flexible = {flex_cond};");
    }
    out.push_str("Ok(Self {\n");
    for f in &def.fields {
        let _ = writeln!(out, "{}: {},", field_ident(f).0, arbitrary_field(ctx, f)?);
    }
    if flex {
        let _ = writeln!(
            out,
            "unknown_tagged_fields: if flexible {{ crate::testing::arb_unknown_tagged(u, &[{}])? }} else {{ Vec::new() }},",
            known_tags.join(", ")
        );
    }
    out.push_str("})\n}\n}\n\n");
    Ok(())
}

/// The one-line summary of a message: api key, versions, flexible versions.
pub fn message_summary(s: &Schema) -> String {
    let mut d = String::new();
    match (s.kind, s.api_key) {
        (Kind::Request, Some(k)) => {
            let _ = write!(d, "request of API key {k}");
        }
        (Kind::Response, Some(k)) => {
            let _ = write!(d, "response of API key {k}");
        }
        (Kind::Header, _) => d.push_str("header"),
        _ => d.push_str("data structure"),
    }
    let _ = write!(d, ", versions {}-{}", s.valid.0, s.valid.1);
    let _ = write!(d, ", flexible versions {}", s.flexible);
    if let Some(dep) = s.deprecated {
        let _ = write!(d, ", deprecated versions {dep}");
    }
    if s.latest_unstable {
        d.push_str(", latest version unstable");
    }
    d
}

/// Collects the file's structs in declaration order: the message, inline structs
/// depth first, then common structs.
fn collect_structs(s: &Schema) -> Result<Vec<StructDef>, String> {
    fn walk(fields: &[Field], out: &mut Vec<StructDef>) -> Result<(), String> {
        for f in fields {
            if let Some(inner) = &f.fields {
                let name =
                    f.ty.struct_name().ok_or_else(|| format!("field {} has fields but no struct type", f.name))?;
                if out.iter().any(|d| d.name == name) {
                    return Err(format!("struct {name} is defined twice"));
                }
                out.push(StructDef { name: name.to_owned(), fields: inner.clone() });
                walk(inner, out)?;
            }
        }
        Ok(())
    }
    let mut out = vec![StructDef { name: s.name.clone(), fields: s.fields.clone() }];
    walk(&s.fields, &mut out)?;
    for c in &s.common_structs {
        if out.iter().any(|d| d.name == c.name) {
            return Err(format!("common struct {} clashes with another struct", c.name));
        }
        out.push(c.clone());
        walk(&c.fields, &mut out)?;
    }
    Ok(out)
}

/// Generates the module for one schema.
pub fn generate(s: &Schema) -> Result<String, String> {
    let structs = collect_structs(s).map_err(|e| format!("{}: {e}", s.file))?;
    let ctx = Ctx {
        schema: s,
        lo: s.valid.0,
        hi: s.valid.1,
        structs: structs.iter().map(|d| (d.name.clone(), d.clone())).collect(),
    };
    // Every referenced struct must be defined in the file.
    for d in &structs {
        for f in &d.fields {
            if let Some(n) = f.ty.struct_name() {
                if !ctx.structs.contains_key(n) {
                    return Err(format!("{}: {}.{} refers to unknown struct {n}", s.file, d.name, f.name));
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "//! `{}` ({}): {}.", s.name, s.file, message_summary(s));
    out.push_str(
        "\n#![allow(clippy::all, clippy::pedantic, unused_imports, unused_mut)]\n\nuse bytes::{BufMut, Bytes, BytesMut};\n\nuse crate::error::{DecodeError, EncodeError};\nuse crate::wire::{self, RawTaggedField, Uuid};\n\n",
    );
    for d in &structs {
        gen_struct(&ctx, d, &mut out).map_err(|e| format!("{}: {}: {e}", s.file, d.name))?;
    }
    let (lo, hi) = s.valid;
    let flexible_min = match s.flexible.min {
        Some(v) => format!("Some({v})"),
        None => "None".into(),
    };
    let _ = writeln!(
        out,
        "impl crate::Message for {name} {{\nconst NAME: &'static str = \"{name}\";\nconst VERSIONS: crate::VersionRange = crate::VersionRange::new({lo}, {hi});\nconst FLEXIBLE_MIN: Option<i16> = {flexible_min};\nfn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{ crate::message::check_encode_version::<Self>(version)?; self.write(buf, version) }}\nfn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{ crate::message::check_decode_version::<Self>(version)?; Self::read(buf, version) }}\n}}",
        name = s.name
    );
    let _ = writeln!(
        out,
        "\n#[cfg(any(test, feature = \"arbitrary\"))]\nimpl crate::testing::ArbitraryMessage for {name} {{\nfn arbitrary_for_version(u: &mut arbitrary::Unstructured<'_>, version: i16) -> arbitrary::Result<Self> {{ Self::arbitrary(u, version) }}\n}}",
        name = s.name
    );
    Ok(out)
}
