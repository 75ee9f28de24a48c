//! Generates `messages/mod.rs`: the module list, the `ApiKey` enum with each API's
//! versions, and the `AnyRequest` / `AnyResponse` enums that dispatch on an api key.

use std::fmt::Write as _;

use super::message::{message_summary, snake_case};
use super::schema::{Kind, Schema};

/// One API: its request and response schemas.
struct Api<'a> {
    key: i16,
    /// `Produce` for `ProduceRequest`.
    name: String,
    req: &'a Schema,
    resp: &'a Schema,
}

fn apis(schemas: &[Schema]) -> Result<Vec<Api<'_>>, String> {
    let mut out = Vec::new();
    for req in schemas.iter().filter(|s| s.kind == Kind::Request) {
        let key = req.api_key.ok_or_else(|| format!("{}: request without apiKey", req.file))?;
        let name = req
            .name
            .strip_suffix("Request")
            .ok_or_else(|| format!("{}: request name must end in Request", req.file))?
            .to_owned();
        let resp = schemas
            .iter()
            .find(|s| s.kind == Kind::Response && s.api_key == Some(key))
            .ok_or_else(|| format!("{}: no response with api key {key}", req.file))?;
        if resp.valid != req.valid {
            return Err(format!(
                "{} and {} disagree on valid versions ({:?} vs {:?})",
                req.file, resp.file, req.valid, resp.valid
            ));
        }
        if resp.flexible != req.flexible {
            return Err(format!("{} and {} disagree on flexible versions", req.file, resp.file));
        }
        out.push(Api { key, name, req, resp });
    }
    out.sort_by_key(|a| a.key);
    for w in out.windows(2) {
        if w[0].key == w[1].key {
            return Err(format!("api key {} is used by {} and {}", w[0].key, w[0].req.file, w[1].req.file));
        }
    }
    Ok(out)
}

/// Generates `messages/mod.rs`.
pub fn generate(schemas: &[Schema]) -> Result<String, String> {
    let apis = apis(schemas)?;
    let mut out = String::new();
    out.push_str("//! Every Kafka message, one module per schema file, plus [`ApiKey`] and the\n");
    out.push_str("//! [`AnyRequest`] / [`AnyResponse`] enums that dispatch on an api key.\n\n");
    out.push_str("#![allow(clippy::all, clippy::pedantic)]\n\n");
    out.push_str("use bytes::{Bytes, BytesMut};\n\nuse crate::error::{DecodeError, EncodeError};\nuse crate::{Message, VersionRange};\n\n");

    for s in schemas {
        let m = snake_case(&s.name);
        let _ = writeln!(out, "pub mod {m};\n#[doc(inline)]\npub use {m}::{};", s.name);
    }

    // ApiKey
    out.push_str("\n/// The API key of every request this crate knows, with each API's versions.\n");
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[non_exhaustive]\n#[repr(i16)]\npub enum ApiKey {\n");
    for a in &apis {
        let _ = writeln!(out, "/// Key {}: [`{}`] / [`{}`], {}.", a.key, a.req.name, a.resp.name, summary_tail(a.req));
        let _ = writeln!(out, "{} = {},", a.name, a.key);
    }
    out.push_str("}\n\n");

    out.push_str("impl ApiKey {\n");
    out.push_str("/// Every API key, in key order.\npub const ALL: &'static [ApiKey] = &[");
    for a in &apis {
        let _ = write!(out, "ApiKey::{}, ", a.name);
    }
    out.push_str("];\n\n");

    let arms = |f: &dyn Fn(&Api<'_>) -> String| -> String {
        apis.iter().map(|a| format!("ApiKey::{} => {},\n", a.name, f(a))).collect()
    };
    let _ = writeln!(out, "/// The key's numeric value.\npub const fn code(self) -> i16 {{ self as i16 }}\n");
    let _ = writeln!(
        out,
        "/// The API with this numeric key, if this crate knows it.\npub const fn from_code(code: i16) -> Option<ApiKey> {{ match code {{"
    );
    for a in &apis {
        let _ = writeln!(out, "{} => Some(ApiKey::{}),", a.key, a.name);
    }
    out.push_str("_ => None,\n}}\n\n");
    let _ = writeln!(
        out,
        "/// The API's name, as in Kafka's schemas (`Produce`, `Fetch`, ...).\npub const fn name(self) -> &'static str {{ match self {{\n{}}} }}\n",
        arms(&|a| format!("\"{}\"", a.name))
    );
    let _ = writeln!(
        out,
        "/// The versions this crate can encode and decode.\npub const fn versions(self) -> VersionRange {{ match self {{\n{}}} }}\n",
        arms(&|a| format!("VersionRange::new({}, {})", a.req.valid.0, a.req.valid.1))
    );
    let _ = writeln!(
        out,
        "/// The lowest flexible version (compact encodings, tagged fields), if any.\npub const fn flexible_min(self) -> Option<i16> {{ match self {{\n{}}} }}\n",
        arms(&|a| match a.req.flexible.min {
            Some(v) => format!("Some({v})"),
            None => "None".into(),
        })
    );
    let _ = writeln!(
        out,
        "/// The deprecated versions, if any.\npub const fn deprecated_versions(self) -> Option<VersionRange> {{ match self {{\n{}}} }}\n",
        arms(&|a| match a.req.deprecated {
            Some(d) => format!(
                "Some(VersionRange::new({}, {}))",
                d.min.unwrap_or(a.req.valid.0),
                d.max.unwrap_or(a.req.valid.1)
            ),
            None => "None".into(),
        })
    );
    let _ = writeln!(
        out,
        "/// Whether the highest version is still unstable in Kafka (not to be used against\n/// production brokers).\npub const fn latest_version_unstable(self) -> bool {{ match self {{\n{}}} }}\n",
        arms(&|a| a.req.latest_unstable.to_string())
    );
    let _ = writeln!(
        out,
        "/// Whether the API is served to clients on broker listeners (as opposed to\n/// controller-only or inter-broker APIs).\npub const fn is_broker_api(self) -> bool {{ match self {{\n{}}} }}\n",
        arms(&|a| a.req.listeners.iter().any(|l| l == "broker").to_string())
    );
    out.push_str(
        "/// The versions safe to use: [`versions`](Self::versions) without an unstable latest version.\n\
         pub const fn stable_versions(self) -> VersionRange {\n\
         let v = self.versions();\n\
         if self.latest_version_unstable() && v.max > v.min { VersionRange::new(v.min, v.max - 1) } else { v }\n}\n\n\
         /// Whether `version` of this API uses the flexible encodings.\n\
         pub const fn is_flexible(self, version: i16) -> bool {\n\
         match self.flexible_min() { Some(m) => version >= m, None => false }\n}\n\n\
         /// The request header version for `version` of this API: 2 for flexible versions,\n\
         /// 1 otherwise, and 0 for `ControlledShutdown` version 0.\n\
         pub const fn request_header_version(self, version: i16) -> i16 {\n\
         if self.is_flexible(version) { 2 } else if matches!(self, ApiKey::ControlledShutdown) && version == 0 { 0 } else { 1 }\n}\n\n\
         /// The response header version for `version` of this API: 1 for flexible versions,\n\
         /// 0 otherwise, and always 0 for `ApiVersions` (so that a client can read the\n\
         /// answer whatever version the broker supports).\n\
         pub const fn response_header_version(self, version: i16) -> i16 {\n\
         if matches!(self, ApiKey::ApiVersions) { 0 } else if self.is_flexible(version) { 1 } else { 0 }\n}\n}\n\n",
    );
    out.push_str(
        "impl std::fmt::Display for ApiKey {\nfn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, \"{}({})\", self.name(), self.code()) }\n}\n\n\
         impl TryFrom<i16> for ApiKey {\ntype Error = DecodeError;\nfn try_from(code: i16) -> Result<Self, DecodeError> { ApiKey::from_code(code).ok_or(DecodeError::UnknownApiKey(code)) }\n}\n\n\
         impl From<ApiKey> for i16 {\nfn from(k: ApiKey) -> i16 { k.code() }\n}\n\n",
    );

    // Request / Response trait impls.
    for a in &apis {
        let _ = writeln!(
            out,
            "impl crate::Request for {req} {{ const API_KEY: ApiKey = ApiKey::{n}; type Response = {resp}; }}\nimpl crate::Response for {resp} {{ const API_KEY: ApiKey = ApiKey::{n}; type Request = {req}; }}",
            req = a.req.name,
            resp = a.resp.name,
            n = a.name
        );
    }

    // AnyRequest / AnyResponse
    for (kind, label, pick) in [
        ("Request", "request", (|a: &Api<'_>| a.req.name.clone()) as fn(&Api<'_>) -> String),
        ("Response", "response", |a: &Api<'_>| a.resp.name.clone()),
    ] {
        let _ = writeln!(
            out,
            "\n/// Any {label}, for code that handles {label}s by api key.\n#[derive(Debug, Clone, PartialEq)]\n#[non_exhaustive]\npub enum Any{kind} {{"
        );
        for a in &apis {
            let _ = writeln!(out, "/// [`{}`].\n{}({}),", pick(a), a.name, pick(a));
        }
        out.push_str("}\n\n");
        let _ = writeln!(out, "impl Any{kind} {{");
        let _ = writeln!(
            out,
            "/// The api key of the {label}.\npub const fn api_key(&self) -> ApiKey {{ match self {{\n{}}} }}\n",
            apis.iter().map(|a| format!("Any{kind}::{}(_) => ApiKey::{},\n", a.name, a.name)).collect::<String>()
        );
        let _ = writeln!(
            out,
            "/// Encodes the {label} body at `version`.\npub fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{ match self {{\n{}}} }}\n",
            apis.iter().map(|a| format!("Any{kind}::{}(m) => m.encode(buf, version),\n", a.name)).collect::<String>()
        );
        let _ = writeln!(
            out,
            "/// Decodes a {label} body of `api_key` at `version`.\npub fn decode(api_key: ApiKey, buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{ Ok(match api_key {{\n{}}}) }}\n}}\n",
            apis.iter()
                .map(|a| format!("ApiKey::{} => Any{kind}::{}({}::decode(buf, version)?),\n", a.name, a.name, pick(a)))
                .collect::<String>()
        );
        for a in &apis {
            let _ = writeln!(
                out,
                "impl From<{t}> for Any{kind} {{ fn from(m: {t}) -> Self {{ Any{kind}::{n}(m) }} }}",
                t = pick(a),
                n = a.name
            );
        }
    }

    // The list of every message, for the round-trip property tests.
    out.push_str("\n/// Every message with its round-trip check, for the property tests.\n#[cfg(test)]\npub(crate) const ROUNDTRIP_CHECKS: &[(&str, crate::testing::RoundtripCheck)] = &[\n");
    for s in schemas {
        let _ = writeln!(out, "(\"{n}\", crate::testing::roundtrip::<{n}>),", n = s.name);
    }
    out.push_str("];\n");
    Ok(out)
}

fn summary_tail(s: &Schema) -> String {
    let full = message_summary(s);
    // Drop the leading "request of API key N, ".
    full.split_once(", ").map(|(_, rest)| rest.to_owned()).unwrap_or(full)
}
