// The Jinja interpreter for chat templates: language semantics pinned by small templates, errors
// that name the template line, bounded rendering, and byte-for-byte parity with Hugging Face's
// reference renderer @huggingface/jinja (run under node) on real models' templates.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>

#include <torch/torch.h>

#include "ming/data/encode.h"
#include "ming/model/load.h"
#include "ming/model/transformer.h"
#include "ming/text/chat_template.h"
#include "ming/text/jinja.h"
#include "ming/text/tokenizer.h"
#include "support.h"

using ming::text::jinja::Template;
using ming::text::jinja::TemplateError;
using json = nlohmann::ordered_json;

namespace {

std::string render(const std::string& source, const json& context = json::object()) {
  return Template(source, "t").render(context);
}

std::string error_of(const std::string& source, const json& context = json::object()) {
  try {
    Template(source, "t").render(context);
  } catch (const TemplateError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("jinja: trim_blocks, lstrip_blocks and whitespace control as transformers sets them") {
  CHECK(render("a\n  {% if true %}\nb\n  {% endif %}\nc\n") == "a\nb\nc");
  CHECK(render("x  {%- if true -%}  y  {%- endif -%}  z") == "xyz");
  CHECK(render("{# note #}k{{- ' v ' -}}  w") == "k v w");
  CHECK(render("{%- generation -%}gen{% endgeneration %}") == "gen");
}

TEST_CASE("jinja: for loops expose loop.*, filter inline, run else, and keep namespace changes") {
  CHECK(render("{% for x in [3, 4, 5] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
               "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}") ==
        "103truefalse3;212falsefalse3;321falsetrue3;");
  CHECK(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{% endfor %}") == "24");
  CHECK(render("{% for x in [] %}no{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% set ns = namespace(n=0) %}{% for x in range(4) %}{% set ns.n = ns.n + x %}"
               "{% endfor %}{{ ns.n }}") == "6");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}") ==
        "a=1,b=2,");
  CHECK(render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}"
               "{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}") == "02");
  CHECK(render("{% for m in messages[::-1] %}{{ m }}{% endfor %}",
               {{"messages", {"a", "b", "c"}}}) == "cba");
}

TEST_CASE("jinja: macros take defaults and keyword arguments; call blocks pass caller") {
  CHECK(render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
               "{{ greet('Ann') }} {{ greet('Bo', greeting='Hi') }}") == "Hello, Ann! Hi, Bo!");
  CHECK(render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}in{% endcall %}") ==
        "[in]");
  CHECK(error_of("{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}").find("not more than 1") !=
        std::string::npos);
}

TEST_CASE("jinja: values print and serialise as JavaScript does in @huggingface/jinja") {
  CHECK(render("{{ 1 }} {{ 1.0 }} {{ 2.5 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}") ==
        "1 1.0 2.5 3 3.5 -1 1024");
  CHECK(render("{{ true }} {{ none }}|{{ undefined_name }}|") == "true ||");
  CHECK(render("{{ x | tojson }}", {{"x", {{"b", 1}, {"a", {1.5, "é\"\n"}}, {"n", nullptr}}}}) ==
        "{\"b\": 1, \"a\": [1.5, \"é\\\"\\n\"], \"n\": null}");
  CHECK(render("{{ x | tojson(indent=2) }}", {{"x", {{"a", {1, 2}}}}}) ==
        "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
  CHECK(render("{{ 'é😷' | tojson(ensure_ascii=true) }}") == "\"\\u00e9\\ud83d\\ude37\"");
  // JSON numbers: integral floats are JavaScript integers.
  CHECK(render("{{ x }} {{ x | tojson }}", {{"x", 2.0}}) == "2 2");
}

TEST_CASE("jinja: string methods and filters, with JavaScript whitespace and UTF-16 lengths") {
  CHECK(render("{{ '  a b  '.strip() }}|{{ ' x '.lstrip() }}|{{ ' x '.rstrip() }}|") ==
        "a b|x | x|");
  CHECK(render("{{ '\u3000全角\u3000' | trim }}") == "全角");
  CHECK(render("{{ 'a,b,,c'.split(',') | length }} {{ ' a  b '.split() | join('-') }}") == "4 a-b");
  CHECK(render("{{ 'x</think>y'.split('</think>')[-1] }}") == "y");
  CHECK(render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }}") == "true true");
  CHECK(render("{{ '😷ab' | length }} {{ '😷ab'[1:] }}") == "4 ab");
  CHECK(render("{{ 'hello world' | title }} {{ 'abc' | upper }} {{ 'aXa'.replace('a', 'b') }}") ==
        "Hello World ABC bXb");
  CHECK(render("{{ undefined_name | default('d') }} {{ '' | default('e', true) }}") == "d e");
  CHECK(render("{{ [3, 1, 2] | sort | join(',') }} {{ [{'n': 'b'}, {'n': 'a'}] | map(attribute='n')"
               " | join }}") == "1,2,3 ba");
  CHECK(
      render("{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'cat' }}") ==
      "true true true true");
  CHECK(render("{{ x is defined }} {{ y is string }} {{ y is not none }} {{ z is mapping }}",
               {{"y", "s"}, {"z", json::object()}}) == "false true true true");
}

TEST_CASE("jinja: unsupported or malformed constructs fail naming the template line") {
  CHECK(error_of("line one\n{% include 'x' %}") ==
        "t line 2: unsupported statement '{% include %}' (this Jinja subset has set, if, for, "
        "macro, call, filter, break, continue)");
  CHECK(error_of("a\nb\n{{ 'x' | frobnicate }}")
            .rfind("t line 3: unsupported filter 'frobnicate'", 0) == 0);
  CHECK(error_of("{{ 'x'.format(1) }}").find("method 'format' is not supported") !=
        std::string::npos);
  CHECK(error_of("\n\n{% if x %}never closed").rfind("t line 3:", 0) == 0);
  CHECK(error_of("{{ 'unterminated }}").find("never closed") != std::string::npos);
  CHECK(error_of("{{ x is frob }}") == "t line 1: unsupported test 'is frob'");
  CHECK(error_of("{{ raise_exception('Roles must alternate') }}") ==
        "t line 1: raise_exception: Roles must alternate");
}

TEST_CASE("jinja: hostile templates fail cleanly instead of exhausting stack, time or memory") {
  CHECK(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
            .find("nesting deeper") != std::string::npos);
  CHECK(error_of(std::string(3000, '{') + "%").find("t line 1:") != std::string::npos);
  CHECK(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nests deeper") !=
        std::string::npos);
  CHECK(error_of("{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}")
            .find("steps") != std::string::npos);
  CHECK(error_of("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}")
            .find("bytes") != std::string::npos);
  CHECK(error_of("{{ range(100000000) }}").find("range()") != std::string::npos);
}

// ---- parity with @huggingface/jinja ---------------------------------------------------------

namespace {

namespace fs = std::filesystem;

// Conversations covering what chat templates branch on: system or not, one or many turns,
// generation prompt or not, Unicode (CJK, emoji outside the BMP, RTL, accents), whitespace that
// templates trim, text that looks like template syntax, Qwen3's thinking blocks, tool
// definitions, tool calls and tool results.
const char* const kConversations = R"json([
 {"messages": [{"role": "user", "content": "Hello"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "Hello"}], "add_generation_prompt": false},
 {"messages": [{"role": "system", "content": "You are a careful medical assistant."},
               {"role": "user", "content": "What is hypertension?"}], "add_generation_prompt": true},
 {"messages": [{"role": "system", "content": "Answer briefly."},
               {"role": "user", "content": "Is aspirin an NSAID?"},
               {"role": "assistant", "content": "Yes."}], "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "I have a cough."},
               {"role": "assistant", "content": "How long have you had it?"},
               {"role": "user", "content": "Two weeks."}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
               {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
               {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
               {"role": "assistant", "content": "a2"}, {"role": "user", "content": "u3"}],
  "add_generation_prompt": true},
 {"messages": [{"role": "system", "content": "你是一名医学助手。"},
               {"role": "user", "content": "高血压的症状有哪些？"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "头痛三天了，怎么办？"},
               {"role": "assistant", "content": "建议及时就医，并注意休息。"},
               {"role": "user", "content": "需要做CT吗？"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "Feeling 🤒 today 😷"},
               {"role": "assistant", "content": "Sorry to hear that 💊"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "¿Qué es la diabetes? مرحبا بك"},
               {"role": "assistant", "content": "Die Zuckerkrankheit — naïve café, Ελληνικά"}],
  "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "  padded question \n\n"},
               {"role": "assistant", "content": "\n answer with spaces  "}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "Say \"hi\", {{ braces }}, {% tags %}, a \\ backslash"},
               {"role": "assistant", "content": "ok: {'a': 1} <not-a-token>"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "system", "content": "Line1\nLine2"},
               {"role": "user", "content": "Multi\nline\n\tquestion"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "t1"}, {"role": "assistant", "content": "r1"},
               {"role": "user", "content": "t2"}, {"role": "assistant", "content": "r2"},
               {"role": "user", "content": "t3"}, {"role": "assistant", "content": "r3"},
               {"role": "user", "content": "t4"}, {"role": "assistant", "content": "r4"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""},
               {"role": "user", "content": "Again"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "\u3000全角空格\u3000"}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "q1"},
               {"role": "assistant", "content": "<think>r1</think>a1"},
               {"role": "user", "content": "q2"},
               {"role": "assistant", "content": "<think>\nr2\n</think>\n\na2"}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "Why?"},
               {"role": "assistant", "content": "Because.", "reasoning_content": "Think first."}],
  "add_generation_prompt": false},
 {"messages": [{"role": "user", "content": "Quick answer please"}], "add_generation_prompt": true,
  "enable_thinking": false},
 {"messages": [{"role": "user", "content": "Weather in 北京?"}], "add_generation_prompt": true,
  "tools": [{"type": "function", "function": {"name": "get_weather",
             "description": "Current weather for a city",
             "parameters": {"type": "object",
                            "properties": {"city": {"type": "string", "description": "城市"},
                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                            "required": ["city"]}}},
            {"type": "function", "function": {"name": "lookup_drug",
             "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}}]},
 {"messages": [{"role": "system", "content": "Use tools when needed."},
               {"role": "user", "content": "Weather in 北京?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                "arguments": {"city": "北京", "unit": "celsius"}}}]},
               {"role": "tool", "content": "{\"temperature\": 21, \"sky\": \"晴\"}"}],
  "add_generation_prompt": true,
  "tools": [{"type": "function", "function": {"name": "get_weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]},
 {"messages": [{"role": "user", "content": "Compare ibuprofen and paracetamol."},
               {"role": "assistant", "content": "Let me look both up.",
                "tool_calls": [{"function": {"name": "lookup_drug", "arguments": "{\"name\": \"ibuprofen\"}"}},
                               {"function": {"name": "lookup_drug", "arguments": {"name": "paracetamol", "dose_mg": 500}}}]},
               {"role": "tool", "content": "NSAID"}, {"role": "tool", "content": "analgesic"},
               {"role": "assistant", "content": "Both relieve pain; only ibuprofen is an NSAID."}],
  "add_generation_prompt": false,
  "tools": [{"type": "function", "function": {"name": "lookup_drug",
             "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "dose_mg": {"type": "number"}}}}}]},
 {"messages": [{"role": "user", "content": "<tool_response>not really</tool_response>"},
               {"role": "assistant", "content": "<think>\nhm\n</think>\n\nok"}],
  "add_generation_prompt": true},
 {"messages": [{"role": "system", "content": "Only a system turn."}], "add_generation_prompt": true},
 {"messages": [{"role": "user", "content": "Numbers: 3.14, 1e10, -0, 100%"}],
  "add_generation_prompt": true},
 {"messages": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Fine."}],
  "add_generation_prompt": true}
])json";

// ming's built-in templates as their models' own Jinja: ChatML (Qwen, no default system turn),
// Meta's Llama-2-chat and the corrected Meta-Llama-3-Instruct template.
const std::map<std::string, std::string> kBuiltinJinja = {
    {"chatml",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
     "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
     "{% set system_message = messages[0]['content'] %}{% else %}"
     "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
     "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
     "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
     "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
     "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
     "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    {"llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
     "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
     "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
};

struct NamedTemplate {
  std::string source;
  json special_tokens = json::object();  // bos_token / eos_token as strings
};

std::map<std::string, NamedTemplate> parity_templates() {
  std::map<std::string, NamedTemplate> out;
  for (const char* model : {"qwen3", "llama3", "gemma3"}) {
    const fs::path path = ming::test::data_dir() / "tokenizers" / model / "tokenizer_config.json";
    const json config = json::parse(ming::test::read_text(path));
    NamedTemplate t;
    t.source = config.at("chat_template").get<std::string>();
    for (const char* key : {"bos_token", "eos_token"})
      if (config.contains(key) && config[key].is_string()) t.special_tokens[key] = config[key];
    out[model] = t;
  }
  out["builtin-chatml"] = {kBuiltinJinja.at("chatml"), json::object()};
  out["builtin-llama2"] = {kBuiltinJinja.at("llama2"),
                           {{"bos_token", "<s>"}, {"eos_token", "</s>"}}};
  out["builtin-llama3"] = {kBuiltinJinja.at("llama3"),
                           {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"}}};
  return out;
}

json context_of(const json& conversation, const json& special_tokens) {
  json context = conversation;
  for (const auto& [k, v] : special_tokens.items()) context[k] = v;
  return context;
}

// Installs @huggingface/jinja under the build folder; false when node/npm are absent.
bool reference_renderer(fs::path* package_dir) {
  if (ming::test::run_command("command -v node && command -v npm").exit_code != 0) return false;
  *package_dir = ming::test::build_dir() / "cache" / "jinja-reference";
  const auto r = ming::test::run_command(
      "bash '" +
      (ming::test::source_dir() / "scripts" / "jinja-reference" / "install.sh").string() + "' '" +
      package_dir->string() + "'");
  if (r.exit_code == 3) return false;
  INFO("install.sh: " << r.err);
  REQUIRE(r.exit_code == 0);
  return true;
}

// Built-in renderer for a conversation of system/user/assistant turns (nullopt otherwise).
std::optional<std::vector<ming::text::ChatMessage>> plain_messages(const json& conversation) {
  std::vector<ming::text::ChatMessage> out;
  for (const auto& m : conversation.at("messages")) {
    if (m.size() != 2 || !m.contains("content") || !m["content"].is_string()) return std::nullopt;
    auto role = ming::text::parse_role(m.at("role").get<std::string>());
    if (!role) return std::nullopt;
    out.push_back({*role, m["content"].get<std::string>()});
  }
  return out;
}

// Renders input {"templates", "cases"} with @huggingface/jinja; false when node/npm are absent.
bool reference_render(const json& input, json* expected) {
  fs::path package_dir;
  if (!reference_renderer(&package_dir)) {
    MESSAGE("SKIPPED: node/npm are not installed, so @huggingface/jinja cannot be run");
    return false;
  }
  ming::test::TempDir dir("jinja-reference");
  ming::test::write_text(dir / "cases.json", input.dump());
  const auto r = ming::test::run_command(
      "node '" +
      (ming::test::source_dir() / "scripts" / "jinja-reference" / "render.mjs").string() + "' '" +
      package_dir.string() + "' '" + (dir / "cases.json").string() + "' '" +
      (dir / "out.json").string() + "'");
  INFO("render.mjs: " << r.err);
  REQUIRE(r.exit_code == 0);
  *expected = json::parse(ming::test::read_text(dir / "out.json"));
  REQUIRE(expected->size() == input["cases"].size());
  return true;
}

}  // namespace

TEST_CASE("jinja: chat templates render byte-identical to @huggingface/jinja (node)") {
  const auto templates = parity_templates();
  const json conversations = json::parse(kConversations);
  json input = {{"templates", json::object()}, {"cases", json::array()}};
  for (const auto& [name, t] : templates) {
    input["templates"][name] = t.source;
    for (const auto& c : conversations)
      input["cases"].push_back({{"template", name}, {"context", context_of(c, t.special_tokens)}});
  }
  json expected;
  if (!reference_render(input, &expected)) return;

  std::map<std::string, int> identical, both_refused, builtin_identical;
  size_t i = 0;
  for (const auto& [name, t] : templates) {
    const Template compiled(t.source, name);
    for (const auto& c : conversations) {
      const json& want = expected[i++];
      const json context = context_of(c, t.special_tokens);
      std::string got, error;
      try {
        got = compiled.render(context);
      } catch (const TemplateError& e) {
        error = e.what();
      }
      INFO(name << " conversation " << c.dump());
      if (want.contains("error")) {
        INFO("reference error: " << want["error"].get<std::string>());
        CHECK(!error.empty());
        ++both_refused[name];
        continue;
      }
      INFO("ming error: " << error);
      CHECK(got == want["text"].get<std::string>());
      if (got == want["text"].get<std::string>()) ++identical[name];
      // ming's own renderer of the same family renders what the family's Jinja renders.
      if (name.rfind("builtin-", 0) == 0) {
        const auto messages = plain_messages(c);
        if (!messages) continue;
        ming::text::RenderOptions options;
        options.add_generation_prompt = c.value("add_generation_prompt", false);
        const auto kind = ming::text::parse_chat_template(name.substr(8));
        const std::string builtin =
            ming::text::join_segments(ming::text::render_chat(kind, *messages, options));
        CHECK(builtin == want["text"].get<std::string>());
        if (builtin == want["text"].get<std::string>()) ++builtin_identical[name];
      }
    }
  }
  for (const auto& [name, t] : templates) {
    MESSAGE(name << ": " << identical[name] << " conversations byte-identical, "
                 << both_refused[name] << " refused by both"
                 << (builtin_identical.count(name) ? ", built-in renderer identical on " +
                                                         std::to_string(builtin_identical[name])
                                                   : std::string()));
    CHECK(identical[name] >= 20);
  }
}

namespace {

// A random one-layer LLaMA-shaped model beside a copy of a shared tokenizer's files.
void random_model_with_tokenizer(const fs::path& dir, const std::string& tokenizer) {
  const fs::path source = ming::test::data_dir() / "tokenizers" / tokenizer;
  ming::model::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = ming::text::load_tokenizer(source)->vocab_size();
  c.hidden_size = 16;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = true;
  torch::manual_seed(3);
  ming::model::CausalLM m(c, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.02);
  ming::model::save_model(dir, c, m);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(source / file, dir / file, fs::copy_options::overwrite_existing);
}

}  // namespace

TEST_CASE("jinja: ming-chat --template auto prompts Gemma-3 and Qwen3 models with HF's rendering") {
  const auto templates = parity_templates();
  const json messages = {{{"role", "system"}, {"content", "You are a careful medical assistant."}},
                         {{"role", "user"}, {"content", "高血压患者可以喝咖啡吗？ Is coffee OK?"}}};
  json input = {{"templates", json::object()}, {"cases", json::array()}};
  for (const char* model : {"gemma3", "qwen3"}) {
    input["templates"][model] = templates.at(model).source;
    json context = templates.at(model).special_tokens;
    context["messages"] = messages;
    context["tools"] = nullptr;
    context["add_generation_prompt"] = true;
    input["cases"].push_back({{"template", model}, {"context", context}});
  }
  json expected;
  if (!reference_render(input, &expected)) return;
  ming::test::TempDir tmp("chat-auto");
  for (size_t i = 0; i < 2; ++i) {
    const std::string model = input["cases"][i]["template"];
    const fs::path dir = tmp / model;
    random_model_with_tokenizer(dir, model);
    const auto r = ming::test::run_command(
        ming::test::tool("ming-chat").string() + " --model '" + dir.string() +
        "' --template auto --show-prompt --dtype fp32 --threads 1 --temperature 0 "
        "--max-new-tokens 1 --system '" +
        messages[0]["content"].get<std::string>() + "' --prompt '" +
        messages[1]["content"].get<std::string>() + "' </dev/null");
    INFO(model << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    const size_t at = r.err.find("prompt ids: ");
    REQUIRE(at != std::string::npos);
    const json got = json::parse(r.err.substr(at + 12, r.err.find('\n', at) - at - 12));
    const std::string hf_text = expected[i].at("text").get<std::string>();
    const auto want = ming::text::load_tokenizer(dir)->encode(hf_text, /*add_bos=*/false,
                                                              /*parse_special=*/true);
    CHECK(got == json(want));
    MESSAGE(model << ": ming-chat prompt = " << got.size()
                  << " ids, equal to ming's tokenization of @huggingface/jinja's rendering");
  }
}

TEST_CASE("jinja: label masks come from rendering prefixes, also where history is rewritten") {
  using namespace ming::text;
  // Qwen3's rule in miniature: the last assistant turn gets an empty think block, earlier ones
  // do not, so a turn renders differently once a later one follows.
  const auto t = ChatTemplate::from_jinja(
      "{% for m in messages %}<|im_start|>{{ m.role }}\n"
      "{% if m.role == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}"
      "{{ m.content }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
      "mini", json::object());
  const std::vector<ChatMessage> conversation = {
      {Role::user, "q1"}, {Role::assistant, "a1"}, {Role::user, "q2"}, {Role::assistant, "a2"}};
  const auto segments = render_chat(t, conversation);
  std::vector<std::string> answers, headers;
  for (const auto& s : segments) {
    if (s.role != Role::assistant) continue;
    (s.kind == SegmentKind::content ? answers : headers).push_back(s.text);
  }
  CHECK(join_segments(segments) == t.render(messages_json(conversation), false));
  CHECK(headers == std::vector<std::string>{"<|im_start|>assistant\n", "<|im_start|>assistant\n"});
  CHECK(answers ==
        std::vector<std::string>{"a1<|im_end|>\n", "<think>\n\n</think>\n\na2<|im_end|>\n"});

  RenderOptions prompt;
  prompt.add_generation_prompt = true;
  const auto with_prompt = render_chat(t, {{Role::user, "q"}}, prompt);
  REQUIRE(with_prompt.size() == 2);
  CHECK(with_prompt.back().kind == SegmentKind::header);
  CHECK(with_prompt.back().text == "<|im_start|>assistant\n");
}

TEST_CASE("jinja: a template that does not parse is reported when used, naming its line") {
  ming::test::TempDir tmp("bad-template");
  ming::test::write_text(tmp / "tokenizer_config.json",
                         R"({"chat_template": "{{ bos_token }}\n{% for m in messages %}{{ m }}"})");
  const auto t = ming::text::ChatTemplate::load(tmp.path());
  CHECK(t.kind() == ming::text::ChatTemplateKind::jinja);
  try {
    t.render(json::array(), true);
    FAIL("expected an error");
  } catch (const TemplateError& e) {
    CHECK(std::string(e.what()).find("tokenizer_config.json chat_template line 2:") !=
          std::string::npos);
  }
}

TEST_CASE("jinja: training on Qwen3's own template labels exactly the assistant turns") {
  const fs::path dir = ming::test::data_dir() / "tokenizers" / "qwen3";
  const auto tok = ming::text::load_tokenizer(dir);
  ming::data::EncodeOptions options;
  options.chat_template = ming::text::ChatTemplate::load(dir);
  options.mask = ming::data::MaskPolicy::assistant;
  using ming::text::Role;
  const std::vector<ming::text::ChatMessage> conversation = {{Role::system, "你是医生。"},
                                                             {Role::user, "头痛怎么办？"},
                                                             {Role::assistant, "多休息。"},
                                                             {Role::user, "还要吃药吗？"},
                                                             {Role::assistant, "按需服用。"}};
  const auto e = ming::data::encode_conversation(*tok, conversation, options);
  const std::string full =
      options.chat_template.render(ming::text::messages_json(conversation), false);
  CHECK(e.input_ids == tok->encode(full, /*add_bos=*/false, /*parse_special=*/true));
  std::vector<int32_t> labelled;
  for (auto id : e.labels)
    if (id != ming::data::kIgnoreIndex) labelled.push_back(id);
  CHECK(tok->decode(labelled, false) ==
        "多休息。<|im_end|>\n<think>\n\n</think>\n\n按需服用。<|im_end|>\n");

  options.mask = ming::data::MaskPolicy::ming;
  CHECK_THROWS_WITH_AS(ming::data::encode_conversation(*tok, conversation, options),
                       doctest::Contains("mask 'ming'"), ming::UsageError);
}

TEST_CASE("jinja: ming-tokenize --chat prints the prompt a model's template renders, or its ids") {
  const fs::path dir = ming::test::data_dir() / "tokenizers" / "qwen3";
  ming::test::TempDir tmp("tokenize-chat");
  const json conversation = {
      {"messages", {{{"role", "user"}, {"content", "Weather in 北京?"}}}},
      {"add_generation_prompt", true},
      {"tools", {{{"type", "function"}, {"function", {{"name", "get_weather"}}}}}},
      {"enable_thinking", false}};
  ming::test::write_text(tmp / "in.jsonl", conversation.dump() + "\n");
  const std::string base = ming::test::tool("ming-tokenize").string() + " --tokenizer '" +
                           dir.string() + "' --chat --input '" + (tmp / "in.jsonl").string() + "'";
  const auto text = ming::test::run_command(base);
  REQUIRE_MESSAGE(text.exit_code == 0, text.err);
  const auto t = ming::text::ChatTemplate::load(dir);
  const std::string want =
      t.render(conversation["messages"], true, conversation["tools"], {{"enable_thinking", false}});
  CHECK(json::parse(text.out).get<std::string>() == want);
  CHECK(want.find("# Tools") != std::string::npos);
  CHECK(want.find("<think>\n\n</think>\n\n") != std::string::npos);
  const auto ids = ming::test::run_command(base + " --ids");
  REQUIRE_MESSAGE(ids.exit_code == 0, ids.err);
  CHECK(json::parse(ids.out) == json(ming::text::load_tokenizer(dir)->encode(want, false, true)));
  ming::test::write_text(tmp / "bad.jsonl", "{\"messages\": 3}\n");
  const auto bad = ming::test::run_command(ming::test::tool("ming-tokenize").string() +
                                           " --tokenizer '" + dir.string() + "' --chat --input '" +
                                           (tmp / "bad.jsonl").string() + "'");
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("line 1: expected an object with a \"messages\" list") != std::string::npos);
}
