//! Refusing configuration keys the binary does not know. serde ignores a field it has no
//! place for, so a misspelt key (`AGENTFLEET__WORKER__CAPACTY=2`) would leave the default
//! in force with nothing said; every key of the configuration file and of the
//! `AGENTFLEET__*` variables is therefore checked against the known ones first, and the
//! first unknown one stops start-up naming it and the nearest known key.
//!
//! The known keys are those of `config/default.toml`, which sets every key there is, except
//! below `providers`: a provider's name is the user's choice, its fields are
//! [`ProviderSettings`]' own, and its `env` table holds whatever variables the user wants.

use std::collections::BTreeSet;

use ::config::{Map, Source, Value, ValueKind};
use serde::de::{self, Deserializer, Visitor};

use super::{DEFAULTS, ProviderSettings};

/// The table whose next key level is a free-form name (a provider's).
const PROVIDERS: &str = "providers";
/// `pricing.<provider>.<model>`: free-form names, see `is_known`.
const PRICING: &str = "pricing";
/// A provider's table of environment variables, whose keys are free-form.
const PROVIDER_ENV: &str = "env";

/// A key that no setting has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// The dotted key, e.g. `worker.capacty`.
    pub key: String,
    /// Where it was set: the file, or the environment variable.
    pub origin: String,
    /// The known key that is closest to it.
    pub nearest: String,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown key `{}` (set in {}); the nearest known key is `{}`",
            self.key, self.origin, self.nearest
        )
    }
}

/// The keys settings may have.
pub struct KnownKeys {
    /// Every table and value path of the defaults outside `providers`.
    paths: BTreeSet<String>,
    provider_fields: &'static [&'static str],
}

impl KnownKeys {
    pub fn new() -> Self {
        let defaults = ::config::File::from_str(DEFAULTS, ::config::FileFormat::Toml)
            .collect()
            .expect("config/default.toml is valid TOML");
        let paths = flatten(&defaults, "")
            .into_iter()
            .filter(|path| path.split('.').next() != Some(PROVIDERS))
            .collect();
        Self {
            paths,
            provider_fields: struct_fields::<ProviderSettings>(),
        }
    }

    fn is_known(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('.').collect();
        match parts.as_slice() {
            [PROVIDERS] | [PROVIDERS, _] => true,
            [PROVIDERS, _, field] => self.provider_fields.contains(field),
            [PROVIDERS, _, PROVIDER_ENV, ..] => true,
            // Provider and model names are free-form (a model's may hold dots); a price's
            // fields are checked when it is read (`domain::Price` refuses unknown ones).
            [PRICING, ..] => true,
            _ => self.paths.contains(path),
        }
    }

    /// The first key of the configuration file `file` that is not known.
    pub fn check_file(&self, file: &std::path::Path) -> Result<(), UnknownKey> {
        let Ok(values) = ::config::File::from(file.to_path_buf()).collect() else {
            // Unreadable or malformed: the real load reports it with its own message.
            return Ok(());
        };
        self.check(&values, |_| file.display().to_string())
    }

    /// The first `AGENTFLEET__*` variable that sets no known key. `source` must be the
    /// environment source the settings are loaded from (it decides which variables count).
    pub fn check_environment(&self, source: &::config::Environment) -> Result<(), UnknownKey> {
        let Ok(values) = source.collect() else {
            return Ok(());
        };
        self.check(&values, |path| {
            format!(
                "the environment variable AGENTFLEET__{}",
                path.replace('.', "__").to_uppercase()
            )
        })
    }

    fn check(
        &self,
        values: &Map<String, Value>,
        origin: impl Fn(&str) -> String,
    ) -> Result<(), UnknownKey> {
        // The environment source gives dotted keys (`worker.capacity`), a file nested tables.
        let mut unknown: Vec<String> = flatten(values, "")
            .into_iter()
            .filter(|path| !self.is_known(path))
            .collect();
        unknown.sort();
        match unknown.into_iter().next() {
            None => Ok(()),
            Some(key) => Err(UnknownKey {
                origin: origin(&key),
                nearest: self.nearest(&key),
                key,
            }),
        }
    }

    /// The known key with the fewest edits from `key`.
    fn nearest(&self, key: &str) -> String {
        let provider_keys = self.provider_fields.iter().map(|field| {
            match key.split('.').collect::<Vec<_>>().as_slice() {
                [PROVIDERS, name, ..] => format!("{PROVIDERS}.{name}.{field}"),
                _ => format!("{PROVIDERS}.<name>.{field}"),
            }
        });
        self.paths
            .iter()
            .cloned()
            .chain(provider_keys)
            .min_by_key(|known| strsim::levenshtein(known, key))
            .unwrap_or_default()
    }
}

/// The dotted path of every table and value below `table`. Tables below a provider's `env`
/// are not entered: their keys are free-form.
fn flatten(table: &Map<String, Value>, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let descend = !(key == PROVIDER_ENV && prefix.starts_with(PROVIDERS));
        if let (ValueKind::Table(inner), true) = (&value.kind, descend) {
            out.extend(flatten(inner, &path));
        }
        out.push(path);
    }
    out
}

/// The field names of a struct deriving `Deserialize`, as serde knows them.
fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the fields a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only a struct's field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_fields_are_read_from_the_struct() {
        let fields = struct_fields::<ProviderSettings>();
        for field in ["command", "env", "require_account", "oauth_client_id"] {
            assert!(fields.contains(&field), "{fields:?}");
        }
    }

    #[test]
    fn defaults_and_free_form_tables_are_known() {
        let known = KnownKeys::new();
        for key in [
            "worker.capacity",
            "sandbox.network.allow",
            "sandbox.limits.cgroups",
            "providers.mine",
            "providers.mine.spawn_args",
            "providers.claude.env.ANY_NAME",
        ] {
            assert!(known.is_known(key), "{key}");
        }
        for key in [
            "worker.capacty",
            "sandbox.network.alow",
            "providers.mine.comand",
            "nothing",
        ] {
            assert!(!known.is_known(key), "{key}");
        }
        assert_eq!(known.nearest("worker.capacty"), "worker.capacity");
        assert_eq!(
            known.nearest("providers.mine.comand"),
            "providers.mine.command"
        );
    }
}
