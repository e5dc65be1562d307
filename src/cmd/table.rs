//! Tables for people: columns two spaces apart, long text cut with an
//! ellipsis, numbers right-aligned with digits grouped.

/// How a column is laid out.
#[derive(Clone, Copy)]
pub enum Col {
    /// Left-aligned text, cut to this many characters.
    Text(&'static str, usize),
    /// Right-aligned number.
    Num(&'static str),
    /// Left-aligned text never cut (the last column).
    Rest(&'static str),
}

impl Col {
    fn header(&self) -> &'static str {
        match self {
            Col::Text(h, _) | Col::Num(h) | Col::Rest(h) => h,
        }
    }
}

/// A table built row by row and printed at once (widths fit the content).
pub struct Table {
    cols: Vec<Col>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(cols: &[Col]) -> Self {
        Table { cols: cols.to_vec(), rows: Vec::new() }
    }

    /// Adds a row: one cell per column, numbers already formatted with
    /// [`digits`]. Control characters are escaped.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .zip(&self.cols)
            .map(|(c, col)| {
                let c = escape(&c);
                match col {
                    Col::Text(_, max) => cut(&c, *max),
                    _ => c,
                }
            })
            .collect();
        self.rows.push(cells);
    }

    /// The lines, header first.
    pub fn lines(&self) -> Vec<String> {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.cols[i].header().chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.cols.len()).map(width).collect();
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, (c, col)) in cells.iter().zip(&self.cols).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = widths[i].saturating_sub(c.chars().count());
                match col {
                    Col::Num(_) => {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(c);
                    }
                    Col::Rest(_) => out.push_str(c),
                    Col::Text(..) => {
                        out.push_str(c);
                        if i + 1 < cells.len() {
                            out.push_str(&" ".repeat(pad));
                        }
                    }
                }
            }
            out.trim_end().to_string()
        };
        let mut out = vec![line(self.cols.iter().map(Col::header).collect())];
        out.extend(self.rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
        out
    }
}

/// `n` with its digits grouped by thousands: 1234567 → 1,234,567.
pub fn digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `s` cut to `max` characters, the last one an ellipsis.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Control characters shown escaped, so stored text cannot drive the
/// operator's terminal.
pub fn escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// A duration in its largest whole units: 950ms, 42s, 3m 20s, 5h 2m, 2d 3h.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A setting's duration in its natural unit: 90 days, 24h, 15m, 30s.
pub fn span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if d.subsec_millis() != 0 || s == 0 => humantime::format_duration(d).to_string(),
        _ if s.is_multiple_of(86_400) => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The line every listing prints when it has nothing to show.
pub fn none(what: &str) -> String {
    format!("(no {what})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(digits(0), "0");
        assert_eq!(digits(999), "999");
        assert_eq!(digits(1000), "1,000");
        assert_eq!(digits(1234567), "1,234,567");
    }

    #[test]
    fn long_cells_are_cut_and_columns_stay_apart() {
        let mut t = Table::new(&[Col::Text("ID", 8), Col::Num("N"), Col::Rest("ERROR")]);
        t.row(vec!["a-very-long-identifier".into(), digits(12345), "boom\x1b[31m".into()]);
        t.row(vec!["b".into(), digits(1), String::new()]);
        let lines = t.lines();
        assert_eq!(lines[0], "ID             N  ERROR");
        assert_eq!(lines[1], "a-very-…  12,345  boom\\u{1b}[31m");
        assert_eq!(lines[2], "b              1");
    }

    #[test]
    fn ages_read_in_their_largest_units() {
        assert_eq!(age(950), "950ms");
        assert_eq!(age(200_000), "3m 20s");
        assert_eq!(age(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
    }
}
