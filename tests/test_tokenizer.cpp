// Tokenizers on the real files in shared/data/models, plus small synthetic tokenizer.json /
// vocab.json+merges.txt / tiktoken files written by the tests.
//
// Where the expected ids come from (never from this implementation):
//  - qwen.tiktoken: tiktoken's reference algorithm (tiktoken/_educational.py bpe_encode) run in
//    Python over the real rank file, with Python's `regex` module splitting by the Qwen2 pattern
//    and unicodedata NFC, Qwen's specials at 151643..; single tokens checked by grep/base64.
//  - llama2-tokenizer.model: Debian's `spm_encode --output_format=id` (sentencepiece 0.1.97).
//    "a\nb" (spm_encode reads lines) by hand: "▁a"=263, byte fallback <0x0A>=13, "b"=29890.
//  - tok512.bin: llama2.c's run.c encode() compiled verbatim and run on the real file.
//  - synthetic files: worked out by hand from the merge ranks written below.
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/text/tokenizer.h"
#include "support.h"

namespace {

using ming::text::load_tokenizer;
using ming::text::Pretokenizer;
using ming::text::TokenId;
using ming::text::Tokenizer;
using Ids = std::vector<TokenId>;

const Tokenizer& qwen() {
  static const auto tok = load_tokenizer(ming::test::data_dir() / "models" / "qwen.tiktoken");
  return *tok;
}
const Tokenizer& llama2() {
  static const auto tok =
      load_tokenizer(ming::test::data_dir() / "models" / "llama2-tokenizer.model");
  return *tok;
}
const Tokenizer& tok512() {
  static const auto tok = load_tokenizer(ming::test::data_dir() / "models" / "tok512.bin");
  return *tok;
}

// Strings decode(encode(x)) must give back: NFC text (Qwen normalises to NFC first).
const std::vector<std::string> kRoundTrip = {
    "",
    "Hello world",
    "  leading and trailing  ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "I'm sure they'll've DONE it's",
    "1234567890 3.14159 -42",
    "患者，男，45岁。主诉：头痛3天。",
    "😀👍🏽 🇨🇳 family: 👨‍👩‍👧",
    "ünïcödé café naïve",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<s>[INST] hi [/INST] ok </s>",
    std::string("nul\0byte", 8),
    "Ω≈ç√∫˜µ≤≥÷ — “quotes” … ‹›",
};

}  // namespace

TEST_CASE("qwen tiktoken encodes words, digits and contractions like tiktoken") {
  const auto& t = qwen();
  CHECK(t.encode("Hello world") == Ids{9707, 1879});
  CHECK(t.encode("123456") == Ids{16, 17, 18, 19, 20, 21});  // Qwen splits every digit
  CHECK(t.encode("I'm don't WE'LL") == Ids{40, 2776, 1513, 944, 19677, 6, 4086});
  CHECK(t.encode("Aspirin 100mg/day reduces MI risk by 25%.") ==
        Ids{2121, 5565, 258, 220, 16, 15, 15, 12311, 44739, 25271, 18476, 5214, 553, 220, 17, 20,
            14360});
  CHECK(t.encode("") == Ids{});
}

TEST_CASE("qwen tiktoken splits runs of spaces, tabs and newlines like the Qwen2 pattern") {
  const auto& t = qwen();
  CHECK(t.encode("a  b\n\n\tc   ") == Ids{64, 220, 293, 271, 1444, 262});
  CHECK(t.encode("line1\r\nline2\n\n  end") == Ids{1056, 16, 319, 1056, 17, 271, 220, 835});
  CHECK(t.encode("  two leading") == Ids{220, 1378, 6388});
  CHECK(t.encode("tail spaces   ") == Ids{14586, 12621, 262});
}

TEST_CASE("qwen tiktoken encodes CJK and emoji, and NFC-normalises first") {
  const auto& t = qwen();
  CHECK(t.encode("你好世界") == Ids{108386, 99489});
  CHECK(t.encode("患者，男，45岁。主诉：头痛3天。") == Ids{101924, 3837, 70108, 3837, 19, 20, 92015,
                                                           1773, 35568, 99482, 5122, 109180, 18,
                                                           35727, 1773});
  CHECK(t.encode("😀👍🏽") == Ids{141334, 144349, 145375});
  CHECK(t.encode("caf\xC3\xA9") == Ids{924, 58858});   // precomposed é
  CHECK(t.encode("cafe\xCC\x81") == Ids{924, 58858});  // e + combining acute -> NFC é
}

TEST_CASE("invalid UTF-8 becomes U+FFFD per maximal invalid subsequence before encoding") {
  const auto& t = qwen();
  CHECK(t.encode("a\xFF"
                 "b") == Ids{64, 5691, 65});
  CHECK(t.encode("a\xFF"
                 "b") == t.encode("a\xEF\xBF\xBD"
                                  "b"));
  CHECK(t.encode("x\xE4\xBDy") == Ids{87, 5691, 88});  // truncated 3-byte char: one U+FFFD
  // A UTF-16 surrogate (ED A0 80) is three maximal subparts: three U+FFFD.
  CHECK(t.encode("\xED\xA0\x80") == Ids{57332});
  CHECK(t.encode("\xED\xA0\x80") == t.encode("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  CHECK(llama2().encode("a\xFF"
                        "b") == Ids{263, 30140, 29890});
  CHECK(t.decode(t.encode("ok\xC3")) == "ok\xEF\xBF\xBD");
}

TEST_CASE("qwen special tokens are matched before BPE unless special parsing is off") {
  const auto& t = qwen();
  CHECK(t.encode("<|im_start|>user\nhi<|im_end|>\n") == Ids{151644, 872, 198, 6023, 151645, 198});
  CHECK(t.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n") ==
        Ids{151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198});
  CHECK(t.encode("Hello <|endoftext|> bye") == Ids{9707, 220, 151643, 53041});
  CHECK(t.encode("<|im_start|>", false, /*parse_special=*/false) == Ids{27, 91, 318, 4906, 91, 29});
  CHECK(t.encode("<|extra_0|>") == Ids{151646});
  CHECK(t.encode("<|extra_204|>") == Ids{151850});
  CHECK(t.encode("<|extra_0|>", false, false) == Ids{27, 91, 15460, 62, 15, 91, 29});
  CHECK(t.vocab_size() == 151851);
  CHECK(t.find("<|im_end|>") == std::optional<TokenId>(151645));
  CHECK(t.is_special(151645));
  CHECK_FALSE(t.is_special(9707));
  CHECK(t.piece(1879) == "\xC4\xA0world");  // "Ġworld"
  CHECK(t.find("\xC4\xA0world") == std::optional<TokenId>(1879));
  CHECK_FALSE(t.bos_id().has_value());  // Qwen has no BOS
  CHECK(t.encode("Hi", /*add_bos=*/true) == t.encode("Hi"));
  const auto eos = t.eos_ids();
  CHECK(std::find(eos.begin(), eos.end(), 151643) != eos.end());
  CHECK(std::find(eos.begin(), eos.end(), 151645) != eos.end());
  CHECK(t.decode({151644, 872, 198, 6023, 151645}) == "<|im_start|>user\nhi<|im_end|>");
  CHECK(t.decode({151644, 872, 198, 6023, 151645}, /*skip_special=*/true) == "user\nhi");
}

TEST_CASE("qwen tiktoken merges a long word (heap path) exactly as the reference") {
  // "ab" * 700 is one \p{L}+ word of 1400 bytes; tiktoken's reference merge gives 700 x "ab".
  std::string word;
  for (int i = 0; i < 700; ++i) word += "ab";
  CHECK(qwen().encode(word) == Ids(700, 370));
}

TEST_CASE("decode(encode(x)) == x on every tokenizer") {
  for (const Tokenizer* t : {&qwen(), &llama2(), &tok512()}) {
    for (const auto& s : kRoundTrip) {
      CAPTURE(s);
      CHECK(t->decode(t->encode(s, false, false)) == s);
    }
  }
  for (const auto& s : kRoundTrip) {  // with special parsing on too
    CAPTURE(s);
    CHECK(qwen().decode(qwen().encode(s)) == s);
    CHECK(llama2().decode(llama2().encode(s)) == s);
    CHECK(tok512().decode(tok512().encode(s)) == s);
  }
}

TEST_CASE("decode round-trips real medical text in Chinese and English") {
  const auto zh =
      ming::test::read_text(ming::test::data_dir() / "medicalgpt" / "medical_sft_1K_format.jsonl")
          .substr(0, 60000);
  // Cut at a line end so the sample is whole UTF-8.
  const std::string sample = zh.substr(0, zh.rfind('\n') + 1);
  for (const Tokenizer* t : {&qwen(), &llama2(), &tok512()})
    CHECK(t->decode(t->encode(sample)) == sample);
}

TEST_CASE("qwen tiktoken encodes at least 1 MB/s") {
  const auto text =
      ming::test::read_text(ming::test::data_dir() / "chatdoctor" / "chatdoctor5k.json");
  const std::string mb = text.substr(0, text.find('\n', 1 << 20));
  const auto start = std::chrono::steady_clock::now();
  const auto ids = qwen().encode(mb);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("qwen encode: " << mb.size() / seconds / 1e6 << " MB/s, " << ids.size() << " tokens");
  CHECK(ids.size() > mb.size() / 8);
  CHECK(seconds < 1.0 * static_cast<double>(mb.size()) / 1e6);
}

TEST_CASE("llama2 SentencePiece encodes like spm_encode") {
  const auto& t = llama2();
  CHECK(t.encode("Hello world") == Ids{15043, 3186});
  CHECK(t.encode("Hello world", /*add_bos=*/true) == Ids{1, 15043, 3186});
  CHECK(t.encode("123456") == Ids{29871, 29896, 29906, 29941, 29946, 29945, 29953});
  CHECK(t.encode("I'm don't") == Ids{306, 29915, 29885, 1016, 29915, 29873});
  CHECK(t.encode("你好世界") == Ids{29871, 30919, 31076, 30793, 30967});
  CHECK(t.encode("😀") == Ids{29871, 243, 162, 155, 131});  // byte fallback
  CHECK(t.encode("a  b") == Ids{263, 29871, 289});
  CHECK(t.encode("tab\there  ") == Ids{4434, 12, 4150, 259});
  CHECK(t.encode("a\nb") == Ids{263, 13, 29890});
  CHECK(t.vocab_size() == 32000);
  CHECK(t.bos_id() == std::optional<TokenId>(1));
  CHECK(t.eos_ids() == Ids{2});
}

TEST_CASE("llama2 literal <s> and </s> map to BOS/EOS ids when special parsing is on") {
  const auto& t = llama2();
  CHECK(t.encode("<s>Hello</s>") == Ids{1, 15043, 2});
  CHECK(t.encode("<s>Hello</s>", false, /*parse_special=*/false) ==
        Ids{529, 29879, 29958, 10994, 829, 29879, 29958});
  CHECK(t.decode({1, 15043, 3186, 2}) == "<s>Hello world</s>");
  CHECK(t.decode({1, 15043, 3186, 2}, /*skip_special=*/true) == "Hello world");
  CHECK(t.piece(15043) == "\xE2\x96\x81Hello");
  CHECK(t.find("<s>") == std::optional<TokenId>(1));
  CHECK(t.is_special(2));
  CHECK_FALSE(t.is_special(15043));
}

TEST_CASE("llama2.c tok512.bin encodes like llama2.c's encode") {
  const auto& t = tok512();
  CHECK(t.encode("Once upon a time") == Ids{403, 407, 261, 378});
  CHECK(t.encode("Once upon a time", /*add_bos=*/true) == Ids{1, 403, 407, 261, 378});
  CHECK(t.encode("Hello world") == Ids{346, 306, 414, 263, 304, 341});
  CHECK(t.encode("123 456") == Ids{410, 475, 479, 472, 410, 484, 480, 490});
  CHECK(t.encode("I'm don't") == Ids{359, 439, 423, 279, 289, 439, 413});
  CHECK(t.encode("a  b\n\tc") == Ids{261, 410, 268, 13, 12, 429});
  CHECK(t.encode("你好") == Ids{410, 231, 192, 163, 232, 168, 192});  // byte fallback at byte+3
  CHECK(t.encode("😀") == Ids{410, 243, 162, 155, 131});
  CHECK(t.encode("Lily's cat") == Ids{317, 439, 419, 280, 294});
  CHECK(t.encode("") == Ids{});
  CHECK(t.encode("<s>Once") == Ids{1, 403});
  CHECK(t.encode("<s>Once", false, false) == Ids{410, 504, 419, 505, 441, 416, 331});
  CHECK(t.vocab_size() == 512);
  CHECK(t.bos_id() == std::optional<TokenId>(1));
  CHECK(t.eos_ids() == Ids{2});
  // llama2.c's decode: the space after BOS is dropped, <0xXX> pieces are raw bytes.
  CHECK(t.decode({1, 403, 407, 261, 378}) == "<s>Once upon a time");
  CHECK(t.decode({1, 403, 407, 261, 378}, true) == "Once upon a time");
  CHECK(t.decode({410, 243, 162, 155, 131}) == "\xF0\x9F\x98\x80");
}

namespace {

// A 17-piece byte-level vocabulary with merges worked out by hand in the tests below.
const char* kVocabJson =
    R"({"h":0,"e":1,"l":2,"o":3,"\u0120":4,"w":5,"r":6,"d":7,"he":8,"ll":9,"hell":10,)"
    R"("hello":11,"\u0120w":12,"or":13,"\u0120wor":14,"ld":15,"\u0120world":16})";
const char* kMerges[] = {"h e", "l l",          "he ll", "hell o",        "\xC4\xA0 w",
                         "o r", "\xC4\xA0w or", "l d",   "\xC4\xA0wor ld"};

std::string merges_json() {
  std::string out = "[";
  for (size_t i = 0; i < std::size(kMerges); ++i)
    out += (i ? ",\"" : "\"") + std::string(kMerges[i]) + "\"";
  return out + "]";
}

std::string tokenizer_json(const std::string& pre_tokenizer, bool ignore_merges,
                           const std::string& merges) {
  return std::string(R"({"version":"1.0","added_tokens":[{"id":17,"content":"<|end|>",)"
                     R"("single_word":false,"lstrip":false,"rstrip":false,"normalized":false,)"
                     R"("special":true}],"normalizer":{"type":"NFC"},"pre_tokenizer":)") +
         pre_tokenizer + R"(,"post_processor":null,"decoder":{"type":"ByteLevel"},)" +
         R"("model":{"type":"BPE","dropout":null,"unk_token":null,"byte_fallback":false,)" +
         R"("ignore_merges":)" + (ignore_merges ? "true" : "false") + R"(,"vocab":)" + kVocabJson +
         R"(,"merges":)" + merges + "}}";
}

void check_hello_world(const Tokenizer& t) {
  // "hello": h e l l o -> (h e) -> (l l) -> (he ll) -> (hell o) = 11.
  CHECK(t.encode("hello world") == Ids{11, 16});
  CHECK(t.encode("hell") == Ids{10});
  CHECK(t.encode("hel") == Ids{8, 2});
  CHECK(t.encode("orld") == Ids{13, 15});  // (o r) rank 5 before (l d) rank 7
  CHECK(t.encode("low") == Ids{2, 3, 5});  // no merges apply
  CHECK(t.decode({11, 16}) == "hello world");
  CHECK(t.piece(16) == "\xC4\xA0world");
}

}  // namespace

TEST_CASE("tokenizer.json byte-level BPE loads: merges by rank, added tokens, decoder") {
  ming::test::TempDir dir;
  ming::test::write_text(dir / "tokenizer.json",
                         tokenizer_json(R"({"type":"ByteLevel","add_prefix_space":false,)"
                                        R"("trim_offsets":true,"use_regex":true})",
                                        false, merges_json()));
  const auto t = load_tokenizer(dir.path());
  check_hello_world(*t);
  CHECK(t->encode("hello<|end|>") == Ids{11, 17});
  // Not parsed as a special token, "<|end|>" is plain text whose characters this vocabulary lacks.
  CHECK_THROWS_AS(t->encode("hello <|end|>", false, false), ming::UsageError);
  CHECK(t->decode({11, 17}) == "hello<|end|>");
  CHECK(t->decode({11, 17}, true) == "hello");
  CHECK(t->eos_ids().empty());
  // Same file through the file path, and a Qwen-style Sequence[Split, ByteLevel] pre-tokenizer.
  ming::test::write_text(
      dir / "tokenizer.json",
      tokenizer_json(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":)"
                     R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|)"
                     R"( ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},)"
                     R"("behavior":"Isolated","invert":false},{"type":"ByteLevel",)"
                     R"("add_prefix_space":false,"trim_offsets":false,"use_regex":false}]})",
                     false, merges_json()));
  check_hello_world(*load_tokenizer(dir / "tokenizer.json"));
}

TEST_CASE("tokenizer.json ignore_merges returns a whole-word token without merging") {
  ming::test::TempDir dir;
  // No merge reaches "Ġworld", so only ignore_merges (LLaMA-3's setting) can produce it.
  const std::string few = R"(["h e","l l","he ll","hell o"])";
  const std::string pre = R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})";
  ming::test::write_text(dir / "tokenizer.json", tokenizer_json(pre, true, few));
  CHECK(load_tokenizer(dir.path())->encode("hello world") == Ids{11, 16});
  ming::test::write_text(dir / "tokenizer.json", tokenizer_json(pre, false, few));
  CHECK(load_tokenizer(dir.path())->encode("hello world") == Ids{11, 4, 5, 3, 6, 2, 7});
}

TEST_CASE("tokenizer.json with tokenizer_config.json takes BOS/EOS from the config") {
  ming::test::TempDir dir;
  ming::test::write_text(
      dir / "tokenizer.json",
      tokenizer_json(R"({"type":"ByteLevel","add_prefix_space":false})", false, merges_json()));
  ming::test::write_text(dir / "tokenizer_config.json",
                         R"({"bos_token":null,"eos_token":"<|end|>","tokenizer_class":"X"})");
  const auto t = load_tokenizer(dir.path());
  CHECK_FALSE(t->bos_id().has_value());
  CHECK(t->eos_ids() == Ids{17});
}

TEST_CASE("vocab.json + merges.txt load as GPT-2 byte-level BPE") {
  ming::test::TempDir dir;
  ming::test::write_text(dir / "vocab.json", kVocabJson);
  std::string merges = "#version: 0.2\n";
  for (const char* m : kMerges) merges += std::string(m) + "\n";
  ming::test::write_text(dir / "merges.txt", merges);
  ming::test::write_text(dir / "tokenizer_config.json",
                         R"({"tokenizer_class":"GPT2Tokenizer","eos_token":"hello"})");
  const auto t = load_tokenizer(dir.path());
  check_hello_world(*t);
  CHECK(t->eos_ids() == Ids{11});
  check_hello_world(*load_tokenizer(dir / "merges.txt"));
}

TEST_CASE("malformed tokenizer files are usage errors naming the file") {
  ming::test::TempDir dir;
  ming::test::write_text(dir / "vocab.json", kVocabJson);
  ming::test::write_text(dir / "merges.txt", "h e\nq z\n");
  CHECK_THROWS_AS(load_tokenizer(dir.path()), ming::UsageError);
  try {
    load_tokenizer(dir.path());
  } catch (const ming::UsageError& e) {
    CHECK(std::string(e.what()).find("merges.txt:2") != std::string::npos);
  }
  ming::test::write_text(dir / "bad.tiktoken", "IQ== 0\nnot-base64! 1\n");
  CHECK_THROWS_AS(load_tokenizer(dir / "bad.tiktoken"), ming::UsageError);
  CHECK_THROWS_AS(load_tokenizer(dir / "missing"), ming::UsageError);
  ming::test::TempDir empty;
  CHECK_THROWS_AS(load_tokenizer(empty.path()), ming::UsageError);
}

namespace {

// 256 single bytes (rank = byte value), then "12"=256, "123"=257, "45"=258.
void write_small_tiktoken(const ming::test::fs::path& path) {
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto encode = [&](const std::string& s) {
    std::string out;
    size_t i = 0;
    for (; i + 2 < s.size(); i += 3) {
      const unsigned v =
          (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
      out += {b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], b64[v & 63]};
    }
    if (s.size() - i == 1) {
      const unsigned v = (unsigned char)s[i] << 16;
      out += {b64[v >> 18], b64[(v >> 12) & 63], '=', '='};
    } else if (s.size() - i == 2) {
      const unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;
      out += {b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], '='};
    }
    return out;
  };
  std::string text;
  for (int b = 0; b < 256; ++b)
    text += encode(std::string(1, static_cast<char>(b))) + " " + std::to_string(b) + "\n";
  text += encode("12") + " 256\n" + encode("123") + " 257\n" + encode("45") + " 258\n";
  ming::test::write_text(path, text);
}

}  // namespace

TEST_CASE("a bare tiktoken file takes the chosen pre-tokenizer's pattern and specials") {
  ming::test::TempDir dir;
  write_small_tiktoken(dir / "small.tiktoken");
  ming::text::TokenizerLoadOptions opts;
  // qwen2: \p{N} splits every digit, so no digit merges apply.
  opts.tiktoken_pretokenizer = Pretokenizer::qwen2;
  auto t = load_tokenizer(dir / "small.tiktoken", opts);
  CHECK(t->encode("1234567") == Ids{'1', '2', '3', '4', '5', '6', '7'});
  CHECK(t->encode("<|im_end|>") == Ids{261});
  // llama3: \p{N}{1,3} -> "123" "456" "7"; "123" merges via "12" (256) into 257, "456" via "45".
  opts.tiktoken_pretokenizer = Pretokenizer::llama3;
  t = load_tokenizer(dir / "small.tiktoken", opts);
  CHECK(t->encode("1234567") == Ids{257, 258, '6', '7'});
  CHECK(t->bos_id() == std::optional<TokenId>(259));  // <|begin_of_text|> follows the ranks
  CHECK(t->encode("<|begin_of_text|><|eot_id|>") == Ids{259, 268});
  CHECK(t->encode("x", true) == Ids{259, 'x'});
  // gpt2: " ?\p{N}+" keeps "1234567" whole: 12 -> 123, then 45 -> [123][45][6][7].
  opts.tiktoken_pretokenizer = Pretokenizer::gpt2;
  t = load_tokenizer(dir / "small.tiktoken", opts);
  CHECK(t->encode("1234567") == Ids{257, 258, '6', '7'});
  CHECK(t->encode("12 3") == Ids{256, ' ', '3'});
  CHECK(t->encode("<|endoftext|>") == Ids{259});
  CHECK(ming::text::parse_pretokenizer("llama3") == Pretokenizer::llama3);
  CHECK_THROWS_AS(ming::text::parse_pretokenizer("bert"), ming::UsageError);
}

TEST_CASE("a SentencePiece model trained by spm_train loads and round-trips") {
  ming::test::TempDir dir;
  std::string corpus;
  for (int i = 0; i < 40; ++i)
    corpus +=
        "the patient has a fever and a cough; the doctor gives aspirin " + std::to_string(i) + "\n";
  ming::test::write_text(dir / "corpus.txt", corpus);
  const auto r = ming::test::run_command(
      "spm_train --input='" + (dir / "corpus.txt").string() + "' --model_prefix='" +
      (dir / "tok").string() + "' --vocab_size=60 --character_coverage=1.0 --model_type=bpe");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const auto t = load_tokenizer(dir / "tok.model");
  CHECK(t->vocab_size() == 60);
  CHECK(t->bos_id() == std::optional<TokenId>(1));
  CHECK(t->eos_ids() == Ids{2});
  const std::string text = "the doctor gives aspirin";
  const auto ids = t->encode(text, true);
  CHECK(ids.front() == 1);
  CHECK(t->decode(ids, true) == text);
  CHECK(t->encode("</s>").back() == 2);
}

TEST_CASE("ming-tokenize encodes, prints pieces and decodes JSON lines") {
  const auto tool = ming::test::tool("ming-tokenize").string();
  const auto qwen_file = (ming::test::data_dir() / "models" / "qwen.tiktoken").string();
  auto r = ming::test::run_command("printf '%s\\n' '\"Hello world\"' '\"<|im_end|>\"' | " + tool +
                                   " --tokenizer " + qwen_file);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == "[9707,1879]\n[151645]\n");
  r = ming::test::run_command("echo '\"<|im_end|>\"' | " + tool + " --tokenizer " + qwen_file +
                              " --no-special --pieces");
  // As tiktoken's cl100k (from which Qwen's ranks come): "<" and "|" stay apart.
  CHECK(r.out == "[\"<\",\"|\",\"im\",\"_end\",\"|\",\">\"]\n");
  r = ming::test::run_command("echo '[9707,1879]' | " + tool + " --tokenizer " + qwen_file +
                              " --decode");
  CHECK(r.out == "\"Hello world\"\n");
  const auto llama = (ming::test::data_dir() / "models" / "llama2-tokenizer.model").string();
  r = ming::test::run_command("echo '\"Hello world\"' | " + tool + " --tokenizer " + llama +
                              " --bos");
  CHECK(r.out == "[1,15043,3186]\n");
  r = ming::test::run_command("echo '\"123456\"' | " + tool + " --tokenizer " + qwen_file +
                              " --pretokenizer llama3");
  CHECK(r.out == "[16,17,18,19,20,21]\n");
}

TEST_CASE("ming-tokenize exits 2 naming the line of bad JSON input") {
  const auto tool = ming::test::tool("ming-tokenize").string();
  const auto qwen_file = (ming::test::data_dir() / "models" / "qwen.tiktoken").string();
  ming::test::TempDir dir;
  ming::test::write_text(dir / "in.jsonl", "\"ok\"\n{broken\n");
  auto r = ming::test::run_command(tool + " --tokenizer " + qwen_file + " --input " +
                                   (dir / "in.jsonl").string());
  CHECK(r.exit_code == 2);
  CHECK(r.out == "[562]\n");
  CHECK(r.err.find("line 2") != std::string::npos);
  r = ming::test::run_command("echo '42' | " + tool + " --tokenizer " + qwen_file);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("line 1") != std::string::npos);
  r = ming::test::run_command("echo '\"x\"' | " + tool + " --tokenizer /nonexistent/tok");
  CHECK(r.exit_code == 2);
}
