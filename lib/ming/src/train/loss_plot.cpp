#include "ming/train/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/io/svg.h"

namespace ming::train {

namespace fs = std::filesystem;

namespace {

struct Ticks {
  double lo, hi, step;
  int decimals;
};

// Round-number ticks (1, 2 or 5 times a power of ten) covering [lo, hi] with about `target`
// intervals.
Ticks nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  Ticks t;
  t.step = step;
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  t.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return t;
}

std::string num(double v) {
  return fmt::format("{:.2f}", v);
}

}  // namespace

std::vector<double> smooth_curve(const std::vector<double>& values) {
  std::vector<double> out;
  if (values.empty()) return out;
  const double n = static_cast<double>(values.size());
  const double weight = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * n)) - 0.5);
  double last = values.front();
  for (double v : values) {
    last = last * weight + (1.0 - weight) * v;
    out.push_back(last);
  }
  return out;
}

std::string line_plot_svg(const LinePlot& plot) {
  const double width = 760, height = 440, left = 78, right = 24, top = 44, bottom = 58;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double x_min = HUGE_VAL, x_max = -HUGE_VAL, y_min = HUGE_VAL, y_max = -HUGE_VAL;
  for (const auto& s : plot.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  if (x_min > x_max) x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  const Ticks xt = nice_ticks(x_min, x_max, 8), yt = nice_ticks(y_min, y_max, 6);
  auto px = [&](double x) { return left + (x - xt.lo) / (xt.hi - xt.lo) * plot_w; };
  auto py = [&](double y) { return top + (yt.hi - y) / (yt.hi - yt.lo) * plot_h; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{3}</text>\n",
      width, height, num(left + plot_w / 2), svg::xml_escape(plot.title));
  // Grid and tick labels.
  for (double y = yt.lo; y <= yt.hi + yt.step * 1e-6; y += yt.step) {
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
        "<text x=\"{3}\" y=\"{4}\" text-anchor=\"end\" fill=\"#333\">{5:.{6}f}</text>\n",
        num(left), num(left + plot_w), num(py(y)), num(left - 6), num(py(y) + 4), y, yt.decimals);
  }
  for (double x = xt.lo; x <= xt.hi + xt.step * 1e-6; x += xt.step) {
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
        "<text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#333\">{4:.{5}f}</text>\n",
        num(px(x)), num(top), num(top + plot_h), num(top + plot_h + 18), x, xt.decimals);
  }
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
      num(left), num(top), num(plot_w), num(plot_h));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     num(left + plot_w / 2), num(height - 14), svg::xml_escape(plot.x_label));
  svg += fmt::format(
      "<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
      "{0})\">{1}</text>\n",
      num(top + plot_h / 2), svg::xml_escape(plot.y_label));

  // Curves.
  for (const auto& s : plot.series) {
    std::string points;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(y)) points += fmt::format("{},{} ", num(px(x)), num(py(y)));
    if (points.empty()) continue;
    if (s.points.size() == 1) {
      svg +=
          fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\" opacity=\"{}\"/>\n",
                      num(px(s.points[0].first)), num(py(s.points[0].second)), s.color, s.opacity);
      continue;
    }
    svg += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" opacity=\"{}\"{} "
        "stroke-linejoin=\"round\" points=\"{}\"><title>{}</title></polyline>\n",
        s.color, s.dashed ? 1.5 : 2, s.opacity, s.dashed ? " stroke-dasharray=\"6 4\"" : "", points,
        svg::xml_escape(s.label));
  }

  // Legend, top right inside the plot.
  double legend_w = 0;
  for (const auto& s : plot.series) legend_w = std::max(legend_w, svg::text_width(s.label, 12));
  legend_w += 44;
  const double lx = left + plot_w - legend_w - 8, ly = top + 8;
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"white\" opacity=\"0.85\" "
      "stroke=\"#ccc\"/>\n",
      num(lx), num(ly), num(legend_w), num(8 + 18.0 * plot.series.size()));
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const auto& s = plot.series[i];
    const double y = ly + 16 + 18.0 * i;
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\" "
        "opacity=\"{4}\"{5}/>\n<text x=\"{6}\" y=\"{7}\">{8}</text>\n",
        num(lx + 8), num(lx + 32), num(y - 4), s.color, s.opacity,
        s.dashed ? " stroke-dasharray=\"6 4\"" : "", num(lx + 38), num(y),
        svg::xml_escape(s.label));
  }
  svg += "</svg>\n";
  return svg;
}

std::vector<fs::path> write_loss_plots(const fs::path& dir) {
  const fs::path metrics = dir / "metrics.jsonl";
  std::vector<fs::path> written;
  if (!fs::exists(metrics)) return written;
  std::vector<std::pair<double, double>> loss, eval_loss;
  std::map<std::string, std::vector<std::pair<double, double>>> per_dataset;
  io::for_each_jsonl(
      metrics,
      [&](const io::Json& r, int64_t) {
        if (!r.is_object() || !r.contains("step")) return;
        const double step = r["step"].get<double>();
        for (auto it = r.begin(); it != r.end(); ++it) {
          if (!it->is_number()) continue;
          const std::string& key = it.key();
          if (key == "loss")
            loss.emplace_back(step, it->get<double>());
          else if (key == "eval_loss")
            eval_loss.emplace_back(step, it->get<double>());
          else if (key.rfind("eval_", 0) == 0 && key.size() > 10 &&
                   key.compare(key.size() - 5, 5, "_loss") == 0)
            per_dataset[key.substr(5, key.size() - 10)].emplace_back(step, it->get<double>());
        }
      },
      [](int64_t, const std::string&) {});

  const std::string run =
      dir.filename().empty() ? dir.parent_path().filename().string() : dir.filename().string();
  auto curves = [](const std::vector<std::pair<double, double>>& raw, const std::string& color) {
    std::vector<double> ys;
    for (const auto& p : raw) ys.push_back(p.second);
    const std::vector<double> smoothed = smooth_curve(ys);
    PlotSeries original{"original", raw, color, 0.35, false};
    PlotSeries smooth{"smoothed", {}, color, 1.0, false};
    for (size_t i = 0; i < raw.size(); ++i) smooth.points.emplace_back(raw[i].first, smoothed[i]);
    return std::vector<PlotSeries>{original, smooth};
  };
  if (!loss.empty()) {
    LinePlot plot{"training loss of " + run, "step", "loss", curves(loss, "#1f77b4")};
    io::write_file_atomic(dir / "training_loss.svg", line_plot_svg(plot));
    written.push_back(dir / "training_loss.svg");
  }
  if (!eval_loss.empty()) {
    LinePlot plot{"evaluation loss of " + run, "step", "eval_loss", curves(eval_loss, "#d62728")};
    static const char* palette[] = {"#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                                    "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"};
    size_t i = 0;
    if (per_dataset.size() > 1)
      for (const auto& [name, points] : per_dataset)
        plot.series.push_back(PlotSeries{name, points, palette[i++ % 8], 0.9, true});
    io::write_file_atomic(dir / "training_eval_loss.svg", line_plot_svg(plot));
    written.push_back(dir / "training_eval_loss.svg");
  }
  return written;
}

}  // namespace ming::train
