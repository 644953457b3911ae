//! Minimal hand-written SVG charts for `numapin bench --plots`: line charts (linear or log x)
//! and grouped bar charts. No plotting crate: a few dozen elements each.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 440.0;
const L: f64 = 70.0; // left margin
const R: f64 = 170.0; // right margin (legend)
const T: f64 = 40.0;
const B: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn head(title: &str, xlabel: &str, ylabel: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        (L + W - R) / 2.0,
        esc(title),
        (L + W - R) / 2.0,
        H - 10.0,
        esc(xlabel),
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - L - R,
        H - T - B
    );
    s
}

/// Round "nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut x = (lo / step).ceil() * step;
    while x <= hi + step * 1e-9 {
        v.push(x);
        x += step;
    }
    v
}

/// Horizontal grid lines with their labels for a y axis from 0 to `y1`, placed by `py`.
fn y_grid(s: &mut String, y1: f64, py: impl Fn(f64) -> f64) {
    for y in ticks(0.0, y1) {
        let p = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{p}" x2="{}" y2="{p}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            p + 4.0,
            label(y)
        );
    }
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{}", (v * 10000.0).round() / 10000.0)
    }
}

fn legend(s: &mut String, items: &[(&str, &str)]) {
    for (i, (name, color)) in items.iter().enumerate() {
        let y = T + 10.0 + 20.0 * i as f64;
        let x = W - R + 12.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            y,
            x + 20.0,
            y + 10.0,
            esc(name)
        );
    }
}

/// One series of a line chart: name, colour, points.
pub type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart of several series `(name, colour, points)`; `log_x` puts x on a log10 scale.
pub fn lines(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series<'_>],
    log_x: bool,
) -> String {
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(fx(x));
            x1 = x1.max(fx(x));
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if log_x {
        x0 = x0.floor();
        x1 = x1.ceil().max(x0 + 1.0);
    } else {
        x0 = x0.min(0.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    let mut s = head(title, xlabel, ylabel);
    let xt: Vec<f64> = if log_x {
        (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(x0, x1)
    };
    for x in xt {
        let p = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{p}" y1="{T}" x2="{p}" y2="{}" stroke="#ddd"/><text x="{p}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            label(x)
        );
    }
    y_grid(&mut s, y1, py);
    for (_, color, p) in series {
        let path: Vec<String> = p
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        if p.len() <= 40 {
            for &(x, y) in p {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
    }
    let items: Vec<(&str, &str)> = series.iter().map(|(n, c, _)| (*n, *c)).collect();
    legend(&mut s, &items);
    s.push_str("</svg>\n");
    s
}

/// A grouped bar chart: one group per label, one bar per `(series, value)` in it, coloured by
/// position with `colors`.
pub fn bars(
    title: &str,
    ylabel: &str,
    groups: &[(String, Vec<(&str, f64)>)],
    colors: &[&str],
) -> String {
    let y1 = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|b| b.1))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max);
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    let mut s = head(title, "page size and threads", ylabel);
    y_grid(&mut s, y1, py);
    let n = groups.len().max(1) as f64;
    let gw = (W - L - R) / n;
    for (gi, (name, bars)) in groups.iter().enumerate() {
        let k = bars.len().max(1) as f64;
        let bw = gw * 0.8 / k;
        for (bi, (_, v)) in bars.iter().enumerate() {
            let v = if v.is_finite() { *v } else { 0.0 };
            let x = L + gw * gi as f64 + gw * 0.1 + bw * bi as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{:.2}</title></rect>"#,
                py(v),
                bw - 1.0,
                H - B - py(v),
                colors[bi % colors.len()],
                v
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            L + gw * (gi as f64 + 0.5),
            H - B + 16.0,
            esc(name)
        );
    }
    let names: Vec<&str> = groups
        .first()
        .map(|g| g.1.iter().map(|b| b.0).collect())
        .unwrap_or_default();
    let items: Vec<(&str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, colors[i % colors.len()]))
        .collect();
    legend(&mut s, &items);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed() {
        let l = lines(
            "t",
            "x",
            "y",
            &[("a", "#000", vec![(1.0, 2.0), (10.0, 3.0)])],
            true,
        );
        assert!(l.starts_with("<svg") && l.trim_end().ends_with("</svg>"));
        assert_eq!(l.matches("<polyline").count(), 1);
        let b = bars(
            "t",
            "y",
            &[("g<1>".into(), vec![("a", 1.0), ("b", f64::NAN)])],
            &["#111", "#222"],
        );
        assert!(b.contains("g&lt;1&gt;"));
        assert_eq!(
            b.matches("<rect x=").count(),
            1 + 2 + 2,
            "frame, bars, legend"
        );
        assert_eq!(ticks(0.0, 1.0).first(), Some(&0.0));
    }
}
