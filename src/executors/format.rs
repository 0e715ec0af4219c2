//! Text shapes several executors' replies share.

/// Rows as left-aligned columns two spaces apart, for a code block. Rows are arrays when
/// the columns are fixed, vectors when a query decides them; all have the first row's width.
pub fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let n = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.as_ref().get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `540KiB`, `64MiB`, `1.944GiB`: binary units with four significant digits, as `docker stats`
/// prints them (go-units' `BytesSize`), so the numbers read the same as on the host.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let text = format!("{value:.*}", 4usize.saturating_sub(digits));
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

/// `12.34%`, as `docker stats` prints percentages.
pub fn percent(p: f64) -> String {
    format!("{p:.2}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_stats_prints_them() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(552_960), "540KiB");
        assert_eq!(bytes(64 << 20), "64MiB");
        assert_eq!(bytes(2_087_354_860), "1.944GiB");
        assert_eq!(bytes(4000), "3.906KiB");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(percent(100.390_17), "100.39%");
    }
}
