//! What a run looks like: the latency percentile distribution as
//! HdrHistogram's text format (`--hgrm`), and one SVG picture of the run
//! (`--plot`): latency by percentile, and delivered msgs/s and p99 latency
//! per second of the measured window.
//!
//! The .hgrm layout is the one HdrHistogram's `outputPercentileDistribution`
//! writes (values in milliseconds), so the usual plotters can overlay a
//! muxchatd run and a Redis run. The SVG is drawn with `plotters`' SVG
//! backend: text stays text, and the viewer picks the font.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::counters::Second;
use super::report::Report;
use super::shared::{Mode, Target};
use super::stats::human;

/// Nanoseconds per millisecond: the unit of both outputs.
const NS_PER_MS: f64 = 1e6;
/// The percentile curve goes out to 99.999% (1 / (1 - q) = 100,000).
const MAX_INVERSE: f64 = 100_000.0;

/// The percentile distribution of `h` (ns) in HdrHistogram's text format,
/// in milliseconds, five ticks per half distance to 100%.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / NS_PER_MS;
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(h.sigfig() as i32)).log2().ceil().exp2() as u64;
    let ms = |ns: f64| ns / NS_PER_MS;
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (ms(h.mean()), ms(h.stdev()), ms(h.max() as f64))
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    );
    s
}

/// A one-line description of the run, for the picture's title.
fn title(r: &Report) -> String {
    let i = &r.info;
    let mode = match i.mode {
        _ if i.publishers == 0 => "idle".to_string(),
        Mode::Rate(rate) => format!("{} msgs/s per publisher", human(rate)),
        Mode::Unlimited { .. } => "unlimited (windowed)".to_string(),
    };
    let target = match i.target {
        Target::Muxchat => "muxchatd",
        Target::Redis => "Redis pub/sub",
    };
    let n =
        |count: usize, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    format!(
        "muxload -> {target}: {}, {}, {}, {mode}, {} B, {}s measured",
        n(i.clients, "client"),
        n(i.rooms, "room"),
        n(i.publishers, "publisher"),
        i.payload,
        i.duration
    )
}

/// A percentile for an axis label: 1 / (1 - q) = 1000 is "99.9%".
fn percentile_label(inverse: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / inverse.max(1.0));
    let text = format!("{p:.5}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Milliseconds for an axis label.
fn ms_label(v: &f64) -> String {
    if *v >= 10.0 || *v == 0.0 {
        format!("{v:.0}")
    } else if *v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// One curve of a chart over time: its legend name, points and colour.
type Series<'a> = (&'a str, &'a [(u32, f64)], &'a RGBColor);
type Failed = Box<dyn std::error::Error>;

/// The SVG picture of a run.
pub fn svg(r: &Report) -> Result<String, String> {
    let mut out = String::new();
    draw(r, &mut out).map_err(|e| format!("cannot draw the plot: {e}"))?;
    Ok(out)
}

fn draw(r: &Report, out: &mut String) -> Result<(), Failed> {
    let root = SVGBackend::with_string(out, (1000, 1400)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&title(r), ("sans-serif", 19))?;
    let (top, rest) = root.split_vertically(480);
    let (sent, rest) = rest.split_vertically(300);
    let (middle, bottom) = rest.split_vertically(300);
    percentiles(&top, &r.tally.latency)?;
    let seconds = &r.seconds;
    let attempted = per_second(seconds, |s| Some(s.attempted as f64));
    let accepted = per_second(seconds, |s| {
        Some(s.attempted.saturating_sub(s.refused) as f64)
    });
    let delivered = per_second(seconds, |s| Some(s.delivered as f64));
    let p99 = per_second(seconds, |s| {
        (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(0.99) as f64 / NS_PER_MS)
    });
    // Refused SAYs (RATE_LIMITED and the like) show as the gap between
    // the two curves, so a run against a rate-limited daemon cannot pass
    // for a clean one in the picture either.
    over_time(
        &sent,
        &format!(
            "SAYs per second: attempted against accepted ({} refused by the daemon)",
            r.tally.counters.refused
        ),
        "SAYs/s (all publishers)",
        &[
            ("attempted", &attempted, &BLACK),
            ("accepted", &accepted, &GREEN),
        ],
        &|v| human(*v),
    )?;
    over_time(
        &middle,
        "Delivered per second",
        "msgs/s (all receivers)",
        &[("delivered", &delivered, &BLUE)],
        &|v| human(*v),
    )?;
    over_time(
        &bottom,
        "p99 latency per second",
        "p99 latency (ms)",
        &[("p99", &p99, &RED)],
        &ms_label,
    )?;
    root.present()?;
    Ok(())
}

/// One point per second: x is the second's end, in seconds since the
/// measured window began.
fn per_second(seconds: &[Second], f: impl Fn(&Second) -> Option<f64>) -> Vec<(u32, f64)> {
    seconds
        .iter()
        .enumerate()
        .filter_map(|(k, s)| Some((k as u32 + 1, f(s)?)))
        .collect()
}

/// The HdrHistogram percentile view: latency against 1 / (1 - q) on a log
/// axis, labelled as percentiles, out to 99.999%.
fn percentiles(area: &Area<'_>, h: &Histogram<u64>) -> Result<(), Failed> {
    let points: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q < 1.0 {
                (1.0 / (1.0 - q)).min(MAX_INVERSE)
            } else {
                MAX_INVERSE
            };
            (x, v.value_iterated_to() as f64 / NS_PER_MS)
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Latency by percentile ({} samples)", human(h.len() as f64)),
            ("sans-serif", 17),
        )
        .margin(14)
        .margin_right(36)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0..MAX_INVERSE).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale toward 99.999%)")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&ms_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    if points.is_empty() {
        area.draw_text(
            "no latency samples",
            &("sans-serif", 16).into_text_style(area),
            (420, 200),
        )?;
    } else {
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    }
    Ok(())
}

/// Per-second series against seconds since the measured window began; a
/// legend names them when there are several.
fn over_time(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    series: &[Series<'_>],
    y_label: &dyn Fn(&f64) -> String,
) -> Result<(), Failed> {
    let all = || series.iter().flat_map(|(_, points, _)| points.iter());
    let right = all().map(|p| p.0).max().unwrap_or(1).max(1);
    let top = all().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(14)
        .margin_right(36)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0..right, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc(y_desc)
        .y_label_formatter(y_label)
        .x_labels(right.min(20) as usize + 1)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for &(name, points, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::latency_histogram;

    #[test]
    fn hgrm_has_the_standard_layout() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        assert_eq!(lines[1], "");
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first, ["0.001", "0.000000000000", "1", "1.00"]);
        let last_row = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        let last: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(last[1..], ["1.000000000000", "1000"]);
        assert!(
            text.contains("#[Max     =        1.000, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn percentile_labels_read_as_percentiles() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&100_000.0), "99.999%");
    }
}
