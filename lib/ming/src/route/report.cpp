#include "ming/route/report.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "ming/core/error.h"
#include "ming/io/files.h"
#include "ming/io/json.h"
#include "ming/io/svg.h"

namespace ming::route {

namespace fs = std::filesystem;
using svg::text_width;
using svg::xml_escape;

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

namespace {

struct Rgb {
  double r, g, b;
};

Rgb hex(uint32_t v) {
  return {double((v >> 16) & 255), double((v >> 8) & 255), double(v & 255)};
}

// Piecewise-linear colour maps: viridis (perceptually uniform, readable in grey and by the
// colour-blind) for shares, blue-white-red (ColorBrewer RdBu) for signed changes.
Rgb interpolate(const std::vector<Rgb>& stops, double x) {
  x = std::clamp(x, 0.0, 1.0) * (stops.size() - 1);
  size_t i = std::min(stops.size() - 2, size_t(x));
  double f = x - i;
  const auto &a = stops[i], &b = stops[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

const std::vector<Rgb>& viridis() {
  static const std::vector<Rgb> stops = {hex(0x440154), hex(0x472d7b), hex(0x3b528b),
                                         hex(0x2c728e), hex(0x21918c), hex(0x28ae80),
                                         hex(0x5ec962), hex(0xaddc30), hex(0xfde725)};
  return stops;
}

const std::vector<Rgb>& red_blue() {
  static const std::vector<Rgb> stops = {hex(0x2166ac), hex(0x92c5de), hex(0xf7f7f7), hex(0xf4a582),
                                         hex(0xb2182b)};
  return stops;
}

std::string css(const Rgb& c) {
  return fmt::format("#{:02x}{:02x}{:02x}", int(std::lround(c.r)), int(std::lround(c.g)),
                     int(std::lround(c.b)));
}

bool dark(const Rgb& c) {
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 140;
}

std::string format_value(double v, bool percent) {
  if (std::isnan(v)) return "n/a";
  if (percent) return fmt::format("{:.1f}%", 100.0 * v);
  return fmt::format("{:.4g}", v);
}

std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s)
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') ? c : '_';
  return out.empty() ? "unnamed" : out;
}

std::string num(double v) {
  if (std::isnan(v)) return "";
  return fmt::format("{:.6g}", v);
}

std::string layer_label(const LayerStats& l) {
  return l.layer >= 0 ? std::to_string(l.layer) : l.info.name;
}

}  // namespace

std::string heatmap_svg(const Heatmap& map) {
  const size_t rows = map.row_labels.size(), cols = map.col_labels.size();
  if (map.values.size() != rows * cols)
    fail("heatmap '{}': {} values for {} x {} cells", map.title, map.values.size(), rows, cols);
  double m = map.scale_max;
  if (m <= 0)
    for (double v : map.values)
      if (!std::isnan(v)) m = std::max(m, std::abs(v));
  if (m <= 0) m = 1;

  const double font = 12;
  const double cell_w = std::clamp(640.0 / std::max<size_t>(cols, 1), 18.0, 48.0);
  const double cell_h = std::clamp(480.0 / std::max<size_t>(rows, 1), 14.0, 32.0);
  double row_label_w = 0, col_label_w = 0;
  for (const auto& l : map.row_labels) row_label_w = std::max(row_label_w, text_width(l, font));
  for (const auto& l : map.col_labels) col_label_w = std::max(col_label_w, text_width(l, font));
  // Column labels are rotated when they do not fit under a cell.
  const bool rotate = col_label_w > cell_w - 2;
  const double col_label_h = rotate ? col_label_w + 8 : font + 6;
  const double left = 30 + row_label_w + 8;
  const double top = 34;
  const double grid_w = cell_w * cols, grid_h = cell_h * rows;
  const double legend_x = left + grid_w + 24, legend_w = 16;
  const double legend_h = std::max(grid_h, 120.0);
  // The title must fit too (it is often longer than a small grid is wide).
  const double width = std::max(legend_x + legend_w + 70, 20 + text_width(map.title, 14));
  const double height = top + std::max(grid_h, legend_h) + col_label_h + 30;
  const bool show_values = cell_w >= 34 && cell_h >= 16;
  const auto& stops = map.diverging ? red_blue() : viridis();
  auto colour = [&](double v) {
    return interpolate(stops, map.diverging ? 0.5 + 0.5 * v / m : v / m);
  };

  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "viewBox=\"0 0 {:.0f} {:.0f}\" font-family=\"sans-serif\" font-size=\"{}\">\n",
      width, height, width, height, font);
  s += fmt::format("<title>{}</title>\n", xml_escape(map.title));
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += fmt::format("<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
                   xml_escape(map.title));
  // Cells.
  s += "<g class=\"cells\" stroke=\"white\" stroke-width=\"0.5\">\n";
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      double v = map.values[r * cols + c];
      double x = left + c * cell_w, y = top + r * cell_h;
      Rgb fill = std::isnan(v) ? Rgb{200, 200, 200} : colour(v);
      s += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\">"
          "<title>{} {}, {} {}: {} {}</title></rect>\n",
          x, y, cell_w, cell_h, css(fill), xml_escape(map.row_axis), xml_escape(map.row_labels[r]),
          xml_escape(map.col_axis), xml_escape(map.col_labels[c]), xml_escape(map.value_name),
          format_value(v, map.percent));
      if (show_values && !std::isnan(v))
        s += fmt::format(
            "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\" text-anchor=\"middle\" "
            "dominant-baseline=\"middle\" fill=\"{}\" stroke=\"none\" "
            "pointer-events=\"none\">{}</text>\n",
            x + cell_w / 2, y + cell_h / 2, dark(fill) ? "white" : "black",
            map.percent ? fmt::format("{:.0f}", 100.0 * v) : fmt::format("{:.2g}", v));
    }
  s += "</g>\n";
  // Row labels and axis title.
  for (size_t r = 0; r < rows; ++r)
    s += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" "
        "dominant-baseline=\"middle\">{}</text>\n",
        left - 6, top + r * cell_h + cell_h / 2, xml_escape(map.row_labels[r]));
  s += fmt::format(
      "<text transform=\"translate(14,{:.1f}) rotate(-90)\" text-anchor=\"middle\" "
      "font-weight=\"bold\">{}</text>\n",
      top + grid_h / 2, xml_escape(map.row_axis));
  // Column labels and axis title.
  for (size_t c = 0; c < cols; ++c) {
    double x = left + c * cell_w + cell_w / 2, y = top + grid_h + 6;
    if (rotate)
      s += fmt::format(
          "<text transform=\"translate({:.1f},{:.1f}) rotate(-90)\" text-anchor=\"end\" "
          "dominant-baseline=\"middle\">{}</text>\n",
          x, y, xml_escape(map.col_labels[c]));
    else
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x,
                       y + font, xml_escape(map.col_labels[c]));
  }
  s += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
      left + grid_w / 2, top + grid_h + col_label_h + 18, xml_escape(map.col_axis));
  // Colour scale legend: a vertical gradient, top = max.
  s += "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n";
  for (size_t i = 0; i < stops.size(); ++i)
    s += fmt::format("<stop offset=\"{:.3f}\" stop-color=\"{}\"/>\n",
                     double(i) / (stops.size() - 1), css(stops[i]));
  s += "</linearGradient></defs>\n";
  s += fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"url(#scale)\" "
      "stroke=\"#666\" stroke-width=\"0.5\"><title>colour scale: {}</title></rect>\n",
      legend_x, top, legend_w, legend_h, xml_escape(map.value_name));
  const double lo = map.diverging ? -m : 0.0;
  for (int i = 0; i <= 4; ++i) {
    double v = lo + (m - lo) * i / 4.0;
    double y = top + legend_h * (1.0 - i / 4.0);
    s += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#333\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" dominant-baseline=\"middle\" font-size=\"10\">{}</text>\n",
        legend_x + legend_w, y, legend_x + legend_w + 4, y, legend_x + legend_w + 6, y,
        (map.diverging && v > 0 ? "+" : "") + format_value(v, map.percent));
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n", legend_x,
                   top + legend_h + 16, xml_escape(map.value_name));
  s += "</svg>\n";
  return s;
}

std::vector<std::string> write_report(const fs::path& dir, const TraceStats& stats,
                                      const TraceComparison* comparison,
                                      const ReportOptions& options) {
  std::vector<std::string> files;
  auto put = [&](const std::string& name, const std::string& text) {
    io::write_file_atomic(dir / name, text);
    files.push_back(name);
  };
  auto lead = [](const LayerStats& l) {
    return fmt::format("{},{}", l.layer, csv_field(l.projection));
  };

  // ---- CSV
  std::string layers =
      "layer,projection,experts,top_k,tokens,cv,max_over_mean,entropy_norm,"
      "top1_cv,top1_max_share,top1_max_expert,collapsed,dead_experts,mi_bits,"
      "mi_norm,mi_top1_bits,module\n";
  std::string experts = "layer,projection,expert,top1_share,topk_share,mean_gate,dead,module\n";
  std::string tasks = "layer,projection,task,expert,share,top1_share,tokens,module\n";
  std::string pairs = "layer,projection,expert_a,expert_b,count,share,lift,module\n";
  for (const auto& l : stats.layers) {
    const std::string module = csv_field(l.info.name);
    int64_t dead = std::count(l.dead.begin(), l.dead.end(), true);
    layers += fmt::format(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", lead(l), l.info.experts, l.info.top_k,
        l.tokens, num(l.balance.cv), num(l.balance.max_over_mean), num(l.balance.entropy_norm),
        num(l.top1_balance.cv), num(l.max_top1_share), l.max_top1_expert, l.collapsed ? 1 : 0, dead,
        num(l.mi_bits), num(l.mi_norm), num(l.mi_top1_bits), module);
    for (int64_t e = 0; e < l.info.experts; ++e)
      experts += fmt::format("{},{},{},{},{},{},{}\n", lead(l), e, num(l.top1_share[e]),
                             num(l.topk_share[e]), num(l.mean_gate[e]), l.dead[e] ? 1 : 0, module);
    for (size_t t = 0; t < stats.tasks.size(); ++t) {
      const int64_t task_tokens = l.task_tokens(t);
      for (int64_t e = 0; e < l.info.experts; ++e)
        tasks +=
            fmt::format("{},{},{},{},{},{},{}\n", lead(l), csv_field(stats.tasks[t].name), e,
                        num(l.task_share(t, e)),
                        num(task_tokens > 0 ? double(l.task_top1_counts[t][e]) / task_tokens : 0.0),
                        task_tokens, module);
    }
    if (l.info.top_k >= 2)
      for (int64_t a = 0; a < l.info.experts; ++a)
        for (int64_t b = a + 1; b < l.info.experts; ++b)
          pairs += fmt::format("{},{},{},{},{},{},{}\n", lead(l), a, b,
                               l.pair_counts[a * l.info.experts + b], num(l.pair_share(a, b)),
                               num(l.pair_lift(a, b)), module);
  }
  put("layers.csv", layers);
  put("experts.csv", experts);
  put("tasks.csv", tasks);
  put("pairs.csv", pairs);
  if (comparison) {
    std::string cmp =
        "layer,projection,tv,js_bits,top1_tv,cv_a,cv_b,moved_expert,moved_delta,module\n";
    std::string cmp_e = "layer,projection,expert,share_a,share_b,delta,module\n";
    for (const auto& c : comparison->layers) {
      std::string head = fmt::format("{},{}", c.layer, csv_field(c.projection));
      cmp += fmt::format("{},{},{},{},{},{},{},{},{}\n", head, num(c.tv), num(c.js_bits),
                         num(c.top1_tv), num(c.cv_a), num(c.cv_b), c.moved_most,
                         num(c.experts[c.moved_most].delta()), csv_field(c.name));
      for (const auto& s : c.experts)
        cmp_e += fmt::format("{},{},{},{},{},{}\n", head, s.expert, num(s.share_a), num(s.share_b),
                             num(s.delta()), csv_field(c.name));
    }
    put("compare.csv", cmp);
    put("compare_experts.csv", cmp_e);
  }

  // ---- SVG
  auto expert_labels = [](int64_t n) {
    std::vector<std::string> out;
    for (int64_t e = 0; e < n; ++e) out.push_back(std::to_string(e));
    return out;
  };
  std::vector<std::string> task_names;
  for (const auto& t : stats.tasks) task_names.push_back(t.name.empty() ? "(none)" : t.name);
  for (const auto& proj : stats.projections()) {
    const auto idx = stats.layers_of(proj);
    int64_t e_max = 0;
    for (size_t i : idx) e_max = std::max(e_max, stats.layers[i].info.experts);
    const std::string p = safe_name(proj);
    const double uniform = 1.0 / double(e_max);
    for (bool top1 : {false, true}) {
      Heatmap map;
      map.title = fmt::format("{} share per expert: {} (uniform = {:.1f}%)",
                              top1 ? "top-1" : "top-k load", proj, 100.0 * uniform);
      map.row_axis = "layer";
      map.col_axis = "expert";
      map.value_name = top1 ? "top-1 share" : "load share";
      map.col_labels = expert_labels(e_max);
      for (size_t i : idx) {
        const auto& l = stats.layers[i];
        map.row_labels.push_back(layer_label(l));
        for (int64_t e = 0; e < e_max; ++e)
          map.values.push_back(e < l.info.experts ? (top1 ? l.top1_share[e] : l.topk_share[e])
                                                  : NAN);
      }
      put(fmt::format("{}_{}.svg", top1 ? "top1" : "load", p), heatmap_svg(map));
    }
    if (!stats.tasks.empty()) {
      Heatmap map;
      map.title = fmt::format("task x expert load share: {}, mean over {} layer{}", proj,
                              idx.size(), idx.size() == 1 ? "" : "s");
      map.row_axis = "task";
      map.col_axis = "expert";
      map.value_name = "load share";
      map.row_labels = task_names;
      map.col_labels = expert_labels(e_max);
      for (size_t t = 0; t < stats.tasks.size(); ++t)
        for (int64_t e = 0; e < e_max; ++e) {
          double sum = 0;
          size_t n = 0;
          for (size_t i : idx)
            if (e < stats.layers[i].info.experts) {
              sum += stats.layers[i].task_share(t, e);
              ++n;
            }
          map.values.push_back(n ? sum / n : NAN);
        }
      put(fmt::format("tasks_{}.svg", p), heatmap_svg(map));

      // Per-layer task maps for the layers where the task matters most.
      std::vector<size_t> order = idx;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return stats.layers[a].mi_bits > stats.layers[b].mi_bits;
      });
      order.resize(std::min(order.size(), options.task_layers));
      for (size_t i : order) {
        const auto& l = stats.layers[i];
        Heatmap lm;
        lm.title =
            fmt::format("task x expert load share: {} (MI {:.3f} bits)", l.info.name, l.mi_bits);
        lm.row_axis = "task";
        lm.col_axis = "expert";
        lm.value_name = "load share";
        lm.row_labels = task_names;
        lm.col_labels = expert_labels(l.info.experts);
        for (size_t t = 0; t < stats.tasks.size(); ++t)
          for (int64_t e = 0; e < l.info.experts; ++e) lm.values.push_back(l.task_share(t, e));
        put(fmt::format("tasks_{}_layer{}.svg", p,
                        l.layer >= 0 ? std::to_string(l.layer) : safe_name(l.info.name)),
            heatmap_svg(lm));
      }
    }
    if (comparison) {
      Heatmap map;
      map.title = fmt::format("change of load share (second - first): {}", proj);
      map.row_axis = "layer";
      map.col_axis = "expert";
      map.value_name = "load change";
      map.diverging = true;
      map.col_labels = expert_labels(e_max);
      for (const auto& c : comparison->layers) {
        if (c.projection != proj) continue;
        map.row_labels.push_back(c.layer >= 0 ? std::to_string(c.layer) : c.name);
        for (int64_t e = 0; e < e_max; ++e)
          map.values.push_back(e < int64_t(c.experts.size()) ? c.experts[e].delta() : NAN);
      }
      if (!map.row_labels.empty()) put(fmt::format("compare_{}.svg", p), heatmap_svg(map));
    }
  }

  auto j = stats_to_json(stats, comparison);
  files.push_back("route_stats.json");
  j["files"] = files;
  io::write_json(dir / "route_stats.json", j);
  return files;
}

}  // namespace ming::route
