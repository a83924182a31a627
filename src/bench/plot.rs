//! The percentile-distribution plot, written as SVG by hand.
//!
//! Like HdrHistogram's plotter: the x axis is the percentile on a log scale of 1 / (1 − p)
//! (0 %, 90 %, 99 %, 99.9 %, 99.99 % equally spaced), the y axis is latency, linear from 0.
//! One polyline per run, with a legend of the runs' labels; the points come from each
//! report's `distribution`, so runs saved with `--json` can be plotted together later.

use std::fmt::Write as _;

use super::Report;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.99 %: log10(1 / (1 − 0.9999)).
const X_MAX: f64 = 4.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// An SVG document plotting every report's percentile distribution.
pub fn plot_svg(reports: &[Report], title: &str) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let top_value = reports
        .iter()
        .flat_map(|r| r.distribution.iter().map(|d| d.latency_us))
        .fold(0.0_f64, f64::max);
    let (unit, scale) = if top_value >= 10_000.0 { ("ms", 1000.0) } else { ("µs", 1.0) };
    let (y_max, y_step) = nice_axis(top_value / scale);
    let x_of = |percentile: f64| {
        let rest = (1.0 - percentile / 100.0).max(1e-12);
        let x = (1.0 / rest).log10().clamp(0.0, X_MAX);
        LEFT + x / X_MAX * plot_w
    };
    let y_of = |us: f64| TOP + plot_h - (us / scale / y_max).clamp(0.0, 1.0) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, LEFT + plot_w / 2.0, escape(title));
    // Grid and axes.
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let py = TOP + plot_h - y / y_max * plot_h;
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##, LEFT + plot_w);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, py + 4.0, trim(y));
        y += y_step;
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%"].iter().enumerate() {
        let px = LEFT + i as f64 / X_MAX * plot_w;
        let _ = writeln!(s, r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/>"##, TOP + plot_h);
        let _ = writeln!(s, r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, TOP + plot_h + 18.0);
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#, LEFT + plot_w / 2.0, HEIGHT - 18.0);
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency ({unit})</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One line per run, and its legend entry.
    for (i, r) in reports.iter().enumerate() {
        let color = COLORS.get(i % COLORS.len()).copied().unwrap_or("#000");
        let points: Vec<String> =
            r.distribution.iter().map(|d| format!("{:.1},{:.1}", x_of(d.percentile), y_of(d.latency_us))).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&r.label)
        );
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(s, r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#, lx + 22.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 28.0, ly + 4.0, escape(&r.label));
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis maximum at or above `max`, and its tick step (5 to 10 ticks).
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.2);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| (max / step).ceil() <= 10.0)
        .unwrap_or(magnitude * 2.0);
    ((max / step).ceil().max(1.0) * step, step)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_is_round_and_covers_the_maximum() {
        for max in [0.7, 3.0, 47.0, 101.0, 999.0, 12345.0] {
            let (top, step) = nice_axis(max);
            assert!(top >= max && top / step <= 10.0 + 1e-9, "{max}: {top} {step}");
        }
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }
}
