//! Measurements by name, several runs each, reported as medians.

#[derive(Default)]
pub struct Samples(std::collections::BTreeMap<String, Vec<f64>>);

impl Samples {
    pub fn add(&mut self, key: &str, v: f64) {
        self.0.entry(key.to_string()).or_default().push(v);
    }
    pub fn median(&self, key: &str) -> f64 {
        let Some(v) = self.0.get(key) else {
            return f64::NAN;
        };
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
}
