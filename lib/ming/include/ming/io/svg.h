// Small helpers for the SVG pictures ming writes by hand (routing heatmaps, loss curves): SVG
// needs no display or plotting library on a cluster node and opens in any browser.
#pragma once

#include <string>

namespace ming::svg {

// Escapes &, <, >, " and ' for XML text and attribute values; control characters other than
// tab and newline (not allowed in XML 1.0) become spaces.
std::string xml_escape(const std::string& text);

// Rough width of a label in px at the given font size: SVG has no text measuring without a
// renderer, and 0.6 em per character is close for sans-serif digits and Latin text.
double text_width(const std::string& text, double font_size);

}  // namespace ming::svg
