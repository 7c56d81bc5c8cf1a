//! `--ramp`: rates per second one after the other. Parsed here so that `cloudmart-load`
//! and `kubectl cloudmart load` (which passes it on to the load Job) accept the same text.

use std::fmt;

/// The rates of a `--ramp`, one per step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ramp(pub Vec<u32>);

/// Parses `--ramp`: rates per second separated by commas, e.g. `100,200,400`.
pub fn parse_ramp(text: &str) -> Result<Ramp, String> {
    let rates = text
        .split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<u32>() {
                Ok(rate) if (1..=MAX_RATE).contains(&rate) => Ok(rate),
                _ => Err(format!(
                    "{part:?} is not a rate: use whole calls per second from 1 to {MAX_RATE}, separated by commas \
                     (e.g. 100,200,400)"
                )),
            }
        })
        .collect::<Result<Vec<u32>, String>>()?;
    if rates.len() > MAX_STEPS {
        return Err(format!("{} steps is too many (at most {MAX_STEPS})", rates.len()));
    }
    Ok(Ramp(rates))
}

/// The highest rate a step may ask for.
pub const MAX_RATE: u32 = 1_000_000;

/// The most steps a ramp may have.
pub const MAX_STEPS: usize = 100;

impl fmt::Display for Ramp {
    /// The text [`parse_ramp`] reads back, e.g. `100,200,400`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rates: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&rates.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_prints_what_parses_back() {
        let ramp = parse_ramp(" 100, 200 ,400").expect("valid");
        assert_eq!(ramp.to_string(), "100,200,400");
        assert_eq!(parse_ramp(&ramp.to_string()), Ok(ramp));
    }
}
