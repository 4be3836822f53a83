// Template: parse once, render many times.
#include "ming/text/jinja.h"

#include "evaluator.h"
#include "lexer.h"
#include "parser.h"

namespace ming::text::jinja {

Template::Template(const std::string& source, std::string origin) : origin_(std::move(origin)) {
  program_ = parse(tokenize(source, origin_), origin_);
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& context) const {
  return render_program(*program_, context, origin_);
}

}  // namespace ming::text::jinja
