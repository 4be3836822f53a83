#include "ming/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include <utf8proc.h>

#include "ming/core/error.h"

namespace ming::eval {

namespace {

const std::vector<std::pair<Metric, const char*>>& metric_table() {
  static const std::vector<std::pair<Metric, const char*>> table = {
      {Metric::accuracy, "accuracy"},       {Metric::exact_match, "exact_match"},
      {Metric::f1_micro, "f1_micro"},       {Metric::f1_macro, "f1_macro"},
      {Metric::f1_weighted, "f1_weighted"}, {Metric::tuple_f1, "tuple_f1"},
      {Metric::rouge1, "rouge1"},           {Metric::rouge2, "rouge2"},
      {Metric::rougeL, "rougeL"},           {Metric::bleu4, "bleu4"},
      {Metric::perplexity, "perplexity"},   {Metric::promptcblue, "promptcblue"},
  };
  return table;
}

// Decodes UTF-8 into code points; invalid bytes become U+FFFD (which the tokenizer drops).
std::vector<int32_t> decode(const std::string& s) {
  std::vector<int32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back(cp);
    p += n;
    left -= n;
  }
  return out;
}

void append_utf8(std::string& out, int32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

bool is_whitespace(int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool is_control(int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

// BERT's definition: all non-letter/number ASCII symbols count, plus Unicode P* categories.
bool is_punctuation(int32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126))
    return true;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideograph blocks BERT treats as one-character words.
bool is_cjk(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Lower-case, then canonical decomposition with combining marks (Mn) removed.
void append_lower_stripped(std::vector<int32_t>& out, int32_t cp) {
  cp = utf8proc_tolower(cp);
  utf8proc_int32_t buf[8];
  int last_boundclass = 0;
  utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 8, UTF8PROC_DECOMPOSE, &last_boundclass);
  if (n <= 0 || n > 8) {
    out.push_back(cp);
    return;
  }
  for (utf8proc_ssize_t i = 0; i < n; ++i)
    if (utf8proc_category(buf[i]) != UTF8PROC_CATEGORY_MN) out.push_back(buf[i]);
}

std::vector<std::string> basic_tokenize(const std::string& text, bool split_cjk) {
  std::vector<std::string> tokens;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) tokens.push_back(std::move(cur));
    cur.clear();
  };
  std::vector<int32_t> mapped;
  for (int32_t cp : decode(text)) {
    if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
    if (is_whitespace(cp)) {
      flush();
      continue;
    }
    if (split_cjk && is_cjk(cp)) {
      flush();
      std::string one;
      append_utf8(one, cp);
      tokens.push_back(one);
      continue;
    }
    mapped.clear();
    append_lower_stripped(mapped, cp);
    for (int32_t m : mapped) {
      if (is_punctuation(m)) {
        flush();
        std::string one;
        append_utf8(one, m);
        tokens.push_back(one);
      } else {
        append_utf8(cur, m);
      }
    }
  }
  flush();
  return tokens;
}

using Ngram = std::vector<std::string>;

std::map<Ngram, int64_t> ngram_counts(const std::vector<std::string>& toks, size_t n) {
  std::map<Ngram, int64_t> counts;
  for (size_t i = 0; i + n <= toks.size(); ++i)
    ++counts[Ngram(toks.begin() + static_cast<std::ptrdiff_t>(i),
                   toks.begin() + static_cast<std::ptrdiff_t>(i + n))];
  return counts;
}

double f_from_pr(double p, double r) {
  return 2.0 * ((p * r) / (p + r + 1e-8));
}

std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, v.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

std::vector<size_t> resample(std::mt19937_64& rng, size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = static_cast<size_t>(rng() % n);
  return idx;
}

}  // namespace

const char* metric_name(Metric m) {
  for (const auto& [metric, name] : metric_table())
    if (metric == m) return name;
  return "?";
}

bool parse_metric(const std::string& name, Metric* out) {
  for (const auto& [metric, n] : metric_table())
    if (name == n) {
      *out = metric;
      return true;
    }
  return false;
}

std::vector<std::string> metric_names() {
  std::vector<std::string> names;
  for (const auto& entry : metric_table()) names.emplace_back(entry.second);
  return names;
}

std::vector<std::string> tokenize_for_metric(const std::string& text, const std::string& language) {
  if (language != "en" && language != "zh")
    fail_usage("metric tokenizer: unknown language '{}' (expected en or zh)", language);
  return basic_tokenize(text, language == "zh");
}

std::string strip_unicode(const std::string& text) {
  std::vector<int32_t> cps = decode(text);
  size_t b = 0, e = cps.size();
  auto space = [](int32_t cp) {
    return is_whitespace(cp) || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
           cp == 0x1E || cp == 0x1F || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
  };
  while (b < e && space(cps[b])) ++b;
  while (e > b && space(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) append_utf8(out, cps[i]);
  return out;
}

std::string normalize_answer(const std::string& text) {
  std::string lowered;
  for (int32_t cp : decode(text)) {
    if (is_punctuation(cp)) continue;
    append_utf8(lowered, is_whitespace(cp) ? ' ' : utf8proc_tolower(cp));
  }
  std::string out, word;
  auto flush = [&] {
    if (!word.empty() && word != "a" && word != "an" && word != "the") {
      if (!out.empty()) out += ' ';
      out += word;
    }
    word.clear();
  };
  for (char c : lowered) {
    if (c == ' ')
      flush();
    else
      word += c;
  }
  flush();
  return out;
}

ExampleStats example_correct(bool correct) {
  ExampleStats s;
  s.value = correct ? 1.0 : 0.0;
  return s;
}

ExampleStats example_exact_match(const std::string& pred, const std::string& gold) {
  return example_correct(normalize_answer(pred) == normalize_answer(gold));
}

ExampleStats example_label(const std::string& pred, const std::string& gold) {
  ExampleStats s;
  s.gold_label = gold;
  s.pred_label = pred;
  s.value = pred == gold ? 1.0 : 0.0;
  return s;
}

ExampleStats example_tuples(const std::vector<std::string>& pred,
                            const std::vector<std::string>& gold) {
  std::set<std::string> p(pred.begin(), pred.end()), g(gold.begin(), gold.end());
  ExampleStats s;
  for (const auto& t : p) (g.count(t) ? s.tp : s.fp) += 1;
  for (const auto& t : g)
    if (!p.count(t)) s.fn += 1;
  return s;
}

double rouge_n_f(const std::vector<std::string>& pred, const std::vector<std::string>& gold,
                 int n) {
  auto hp = ngram_counts(pred, static_cast<size_t>(n));
  auto gp = ngram_counts(gold, static_cast<size_t>(n));
  // pltrdy/rouge_chinese compare n-gram *sets*: each distinct n-gram counts once.
  double overlap = 0;
  for (const auto& [g, c] : hp)
    if (gp.count(g)) overlap += 1;
  double p = hp.empty() ? 0.0 : overlap / static_cast<double>(hp.size());
  double r = gp.empty() ? 0.0 : overlap / static_cast<double>(gp.size());
  return f_from_pr(p, r);
}

double rouge_l_f(const std::vector<std::string>& pred, const std::vector<std::string>& gold) {
  if (pred.empty() || gold.empty()) return 0.0;
  // LCS length with two rolling rows: O(|pred| * |gold|) time, O(|gold|) memory.
  std::vector<int64_t> prev(gold.size() + 1, 0), cur(gold.size() + 1, 0);
  for (size_t i = 1; i <= pred.size(); ++i) {
    for (size_t j = 1; j <= gold.size(); ++j)
      cur[j] = pred[i - 1] == gold[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  double lcs = static_cast<double>(prev[gold.size()]);
  return f_from_pr(lcs / static_cast<double>(pred.size()), lcs / static_cast<double>(gold.size()));
}

ExampleStats example_rouge(const std::vector<std::string>& pred,
                           const std::vector<std::string>& gold, int n) {
  if (n < 0 || n > 4) fail_usage("ROUGE order must be 1..4 or 0 for ROUGE-L, got {}", n);
  ExampleStats s;
  s.value = n == 0 ? rouge_l_f(pred, gold) : rouge_n_f(pred, gold, n);
  return s;
}

ExampleStats example_bleu(const std::vector<std::string>& pred,
                          const std::vector<std::string>& gold) {
  ExampleStats s;
  for (size_t n = 1; n <= 4; ++n) {
    auto hc = ngram_counts(pred, n), rc = ngram_counts(gold, n);
    double m = 0, t = 0;
    for (const auto& [g, c] : hc) {
      auto it = rc.find(g);
      m += static_cast<double>(std::min(c, it == rc.end() ? int64_t{0} : it->second));
      t += static_cast<double>(c);
    }
    s.matches[n - 1] = m;
    s.totals[n - 1] = t;
  }
  s.hyp_len = static_cast<double>(pred.size());
  s.ref_len = static_cast<double>(gold.size());
  return s;
}

ExampleStats example_nll(double nll_sum, double n_tokens) {
  ExampleStats s;
  s.value = nll_sum;
  s.count = n_tokens;
  return s;
}

LabelF1 label_f1(const std::vector<ExampleStats>& rows, const std::vector<size_t>& indices) {
  const std::vector<size_t> idx = indices.empty() ? all_indices(rows.size()) : indices;
  struct Counts {
    double tp = 0, n_pred = 0, n_gold = 0;
  };
  std::map<std::string, Counts> per;  // sorted labels, like sklearn's unique_labels
  for (size_t i : idx) {
    const auto& r = rows.at(i);
    per[r.gold_label].n_gold += 1;
    per[r.pred_label].n_pred += 1;
    if (r.gold_label == r.pred_label) per[r.gold_label].tp += 1;
  }
  LabelF1 out;
  if (per.empty()) return out;
  double n = static_cast<double>(idx.size()), tp_all = 0;
  for (const auto& [label, c] : per) {
    double p = c.n_pred > 0 ? c.tp / c.n_pred : 0.0;
    double r = c.n_gold > 0 ? c.tp / c.n_gold : 0.0;
    double f = p + r > 0 ? 2 * p * r / (p + r) : 0.0;
    out.macro += f;
    out.macro_precision += p;
    out.macro_recall += r;
    out.weighted += f * c.n_gold / n;
    out.weighted_precision += p * c.n_gold / n;
    out.weighted_recall += r * c.n_gold / n;
    tp_all += c.tp;
  }
  double k = static_cast<double>(per.size());
  out.macro /= k;
  out.macro_precision /= k;
  out.macro_recall /= k;
  out.micro = tp_all / n;  // one gold and one predicted label per example
  return out;
}

double aggregate(Metric m, const std::vector<ExampleStats>& rows,
                 const std::vector<size_t>& indices) {
  const std::vector<size_t> idx = indices.empty() ? all_indices(rows.size()) : indices;
  switch (m) {
    case Metric::accuracy:
    case Metric::exact_match:
    case Metric::rouge1:
    case Metric::rouge2:
    case Metric::rougeL: {
      double v = 0, c = 0;
      for (size_t i : idx) {
        v += rows.at(i).value;
        c += rows.at(i).count;
      }
      return c > 0 ? v / c : 0.0;
    }
    case Metric::perplexity: {
      double nll = 0, tokens = 0;
      for (size_t i : idx) {
        nll += rows.at(i).value;
        tokens += rows.at(i).count;
      }
      return tokens > 0 ? std::exp(nll / tokens) : std::nan("");
    }
    case Metric::f1_micro:
      return label_f1(rows, idx).micro;
    case Metric::f1_macro:
      return label_f1(rows, idx).macro;
    case Metric::f1_weighted:
      return label_f1(rows, idx).weighted;
    case Metric::tuple_f1: {
      double tp = 0, fp = 0, fn = 0;
      for (size_t i : idx) {
        tp += static_cast<double>(rows.at(i).tp);
        fp += static_cast<double>(rows.at(i).fp);
        fn += static_cast<double>(rows.at(i).fn);
      }
      if (tp == 0) return 0.0;  // as PromptCBLUE's calc_info_extract_task_scores
      double p = tp / (tp + fp), r = tp / (tp + fn);
      return 2 * p * r / (p + r);
    }
    case Metric::bleu4: {
      std::array<double, 4> mt{}, tt{};
      double hyp = 0, ref = 0;
      for (size_t i : idx) {
        const auto& r = rows.at(i);
        for (int n = 0; n < 4; ++n) {
          mt[n] += r.matches[n];
          tt[n] += r.totals[n];
        }
        hyp += r.hyp_len;
        ref += r.ref_len;
      }
      if (hyp == 0) return 0.0;
      double log_sum = 0;
      for (int n = 0; n < 4; ++n) {
        if (tt[n] == 0) return 0.0;  // hypotheses shorter than n tokens in total
        double p = mt[n] > 0 ? mt[n] / tt[n] : 0.1 / tt[n];  // smoothing method 1
        log_sum += std::log(p);
      }
      double bp = hyp < ref ? std::exp(1.0 - ref / hyp) : 1.0;
      return bp * std::exp(log_sum / 4.0);
    }
    case Metric::promptcblue: {
      std::map<std::string, std::vector<size_t>> groups;
      std::map<std::string, Metric> metric_of;
      for (size_t i : idx) {
        groups[rows.at(i).group].push_back(i);
        metric_of[rows.at(i).group] = rows.at(i).group_metric;
      }
      if (groups.empty()) return 0.0;
      double sum = 0;
      for (const auto& [g, members] : groups) {
        if (metric_of[g] == Metric::promptcblue)
          fail("promptcblue group '{}' cannot itself use the promptcblue metric", g);
        sum += aggregate(metric_of[g], rows, members);
      }
      return sum / static_cast<double>(groups.size());
    }
  }
  return 0.0;
}

Interval bootstrap_ci(Metric m, const std::vector<ExampleStats>& rows, int n_resamples,
                      uint64_t seed, double level) {
  if (rows.empty()) fail_usage("bootstrap: no examples");
  if (n_resamples < 1) fail_usage("bootstrap: need at least 1 resample, got {}", n_resamples);
  if (!(level > 0 && level < 1)) fail_usage("bootstrap: level must be in (0,1), got {}", level);
  Interval out;
  out.point = aggregate(m, rows);
  std::mt19937_64 rng(seed);
  std::vector<double> values;
  values.reserve(static_cast<size_t>(n_resamples));
  for (int b = 0; b < n_resamples; ++b)
    values.push_back(aggregate(m, rows, resample(rng, rows.size())));
  out.lo = quantile(values, (1 - level) / 2);
  out.hi = quantile(values, (1 + level) / 2);
  return out;
}

PairedResult paired_bootstrap(Metric m, const std::vector<ExampleStats>& rows_a,
                              const std::vector<ExampleStats>& rows_b, int n_resamples,
                              uint64_t seed, double level) {
  if (rows_a.size() != rows_b.size())
    fail_usage("paired bootstrap: system A has {} examples, system B {} (must be the same)",
               rows_a.size(), rows_b.size());
  if (rows_a.empty()) fail_usage("paired bootstrap: no examples");
  if (n_resamples < 1) fail_usage("paired bootstrap: need at least 1 resample");
  PairedResult out;
  out.a = aggregate(m, rows_a);
  out.b = aggregate(m, rows_b);
  out.delta.point = out.a - out.b;
  std::mt19937_64 rng(seed);
  std::vector<double> deltas;
  deltas.reserve(static_cast<size_t>(n_resamples));
  int64_t extreme = 0;
  for (int b = 0; b < n_resamples; ++b) {
    auto idx = resample(rng, rows_a.size());
    double d = aggregate(m, rows_a, idx) - aggregate(m, rows_b, idx);
    deltas.push_back(d);
    if (std::fabs(d - out.delta.point) >= std::fabs(out.delta.point)) ++extreme;
  }
  out.delta.lo = quantile(deltas, (1 - level) / 2);
  out.delta.hi = quantile(deltas, (1 + level) / 2);
  out.p_value = static_cast<double>(1 + extreme) / static_cast<double>(1 + n_resamples);
  return out;
}

}  // namespace ming::eval
