//! Integers a JSON number with no fraction gives (`822.0` as well as `822`): JSON Schema's
//! `integer` counts both, and clients that build bodies from floats send the first.

use serde::{Deserialize, Deserializer, de::Error};

/// An optional integer field (`null` and absent are `None`).
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let out_of_range = || D::Error::custom(format!("{number} is not an integer in range"));
    if let Some(n) = number.as_u64() {
        return T::try_from(n).map(Some).map_err(|_| out_of_range());
    }
    if let Some(n) = number.as_i64() {
        return T::try_from(n).map(Some).map_err(|_| out_of_range());
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(63) => {
            T::try_from(f as i64).map(Some).map_err(|_| out_of_range())
        }
        _ => Err(out_of_range()),
    }
}
