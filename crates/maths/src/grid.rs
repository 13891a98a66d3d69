//! Grid axes in the reference code's `min:max:num` syntax (→ linspace). Unlike the reference code, 0 is a
//! valid end point (`0:1:11`), and a 2D grid may be non-square: values are stored as Z[iy][ix].

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub num: usize,
}

impl Axis {
    /// `num` evenly spaced values from `min` to `max` inclusive, as `numpy.linspace` gives them.
    pub fn values(&self) -> Vec<f64> {
        if self.num == 1 {
            return vec![self.min];
        }
        let step = (self.max - self.min) / (self.num - 1) as f64;
        (0..self.num).map(|i| if i + 1 == self.num { self.max } else { self.min + step * i as f64 }).collect()
    }
}

impl FromStr for Axis {
    type Err = String;
    fn from_str(s: &str) -> Result<Axis, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = |why: &str| format!("grid {s:?}: {why} (expected min:max:num, e.g. -1:1:21)");
        if parts.len() != 3 {
            return Err(bad("not three fields"));
        }
        let min: f64 = parts[0].trim().parse().map_err(|_| bad("min is not a number"))?;
        let max: f64 = parts[1].trim().parse().map_err(|_| bad("max is not a number"))?;
        let num: usize = parts[2].trim().parse().map_err(|_| bad("num is not a whole number"))?;
        if !min.is_finite() || !max.is_finite() {
            return Err(bad("min and max must be finite"));
        }
        if num == 0 {
            return Err(bad("num must be at least 1"));
        }
        if num > 100_000 {
            return Err(bad("num is over 100000"));
        }
        if max < min {
            return Err(bad("max is below min"));
        }
        if num > 1 && max == min {
            return Err(bad("min equals max but num > 1"));
        }
        Ok(Axis { min, max, num })
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.min, self.max, self.num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_linspace() {
        let a: Axis = "-1:1:5".parse().unwrap();
        assert_eq!(a.values(), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        let z: Axis = "0:1:11".parse().unwrap(); // the reference code rejects 0 as an end point
        assert_eq!(z.values().len(), 11);
        assert_eq!(z.values()[0], 0.0);
        assert_eq!(z.values()[10], 1.0);
        assert_eq!("-0.5:0:2".parse::<Axis>().unwrap().values(), vec![-0.5, 0.0]);
        assert_eq!("3:3:1".parse::<Axis>().unwrap().values(), vec![3.0]);
        for bad in ["1:2", "a:1:3", "1:0:3", "0:1:0", "1:1:3", "0:inf:3"] {
            assert!(bad.parse::<Axis>().is_err(), "{bad}");
        }
        assert_eq!(a.to_string(), "-1:1:5");
    }
}
