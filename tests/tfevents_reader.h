// An independent reader of TensorBoard event files for the tests, written from the format
// description (TFRecord framing with masked CRC32C; tensorflow.Event / Summary protobufs) and
// sharing no code with ming's writer: a bitwise CRC32C and a minimal protobuf wire decoder.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace ming::test {

// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, bit by bit.
inline uint32_t reference_crc32c(const unsigned char* p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}
inline uint32_t reference_masked_crc(const unsigned char* p, size_t n) {
  const uint32_t c = reference_crc32c(p, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

struct TfScalar {
  std::string tag;
  float value = 0;
};
struct TfEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<TfScalar> scalars;
  int session_status = -1;  // SessionLog.status, -1 when the event has none
};

class WireReader {
 public:
  WireReader(const std::string& bytes) : s_(bytes) {}
  bool done() const { return pos_ >= s_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ >= s_.size() || shift > 63) throw std::runtime_error("bad varint");
      const uint8_t b = static_cast<uint8_t>(s_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  std::string bytes(size_t n) {
    if (pos_ + n > s_.size()) throw std::runtime_error("field past the end");
    std::string out = s_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  template <typename T>
  T fixed() {
    const std::string b = bytes(sizeof(T));
    T v;
    std::memcpy(&v, b.data(), sizeof(T));
    return v;
  }
  // Skips a field of the given wire type.
  void skip(int wire) {
    if (wire == 0)
      varint();
    else if (wire == 1)
      bytes(8);
    else if (wire == 2)
      bytes(varint());
    else if (wire == 5)
      bytes(4);
    else
      throw std::runtime_error("unknown wire type");
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

inline TfEvent decode_event(const std::string& data) {
  TfEvent e;
  WireReader r(data);
  while (!r.done()) {
    const uint64_t key = r.varint();
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 1) {
      e.wall_time = r.fixed<double>();
    } else if (field == 2 && wire == 0) {
      e.step = static_cast<int64_t>(r.varint());
    } else if (field == 3 && wire == 2) {
      e.file_version = r.bytes(r.varint());
    } else if (field == 5 && wire == 2) {
      const std::string summary = r.bytes(r.varint());
      WireReader sr(summary);
      while (!sr.done()) {
        const uint64_t k = sr.varint();
        if ((k >> 3) != 1 || (k & 7) != 2) {
          sr.skip(static_cast<int>(k & 7));
          continue;
        }
        const std::string value = sr.bytes(sr.varint());
        WireReader vr(value);
        TfScalar sc;
        while (!vr.done()) {
          const uint64_t vk = vr.varint();
          if (vk == ((1 << 3) | 2))
            sc.tag = vr.bytes(vr.varint());
          else if (vk == ((2 << 3) | 5))
            sc.value = vr.fixed<float>();
          else
            vr.skip(static_cast<int>(vk & 7));
        }
        e.scalars.push_back(sc);
      }
    } else if (field == 6 && wire == 2) {
      const std::string log = r.bytes(r.varint());
      WireReader lr(log);
      e.session_status = 0;
      while (!lr.done()) {
        const uint64_t k = lr.varint();
        if (k == ((1 << 3) | 0))
          e.session_status = static_cast<int>(lr.varint());
        else
          lr.skip(static_cast<int>(k & 7));
      }
    } else {
      r.skip(wire);
    }
  }
  return e;
}

// Every record of an event file; throws on a bad length CRC, data CRC or a cut-off record.
inline std::vector<TfEvent> read_tfevents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<TfEvent> events;
  size_t pos = 0;
  auto u = [&](size_t at) { return reinterpret_cast<const unsigned char*>(file.data() + at); };
  while (pos < file.size()) {
    if (pos + 12 > file.size()) throw std::runtime_error("cut-off record header");
    uint64_t length;
    uint32_t length_crc, data_crc;
    std::memcpy(&length, file.data() + pos, 8);
    std::memcpy(&length_crc, file.data() + pos + 8, 4);
    if (length_crc != reference_masked_crc(u(pos), 8)) throw std::runtime_error("length CRC");
    if (pos + 12 + length + 4 > file.size()) throw std::runtime_error("cut-off record");
    std::memcpy(&data_crc, file.data() + pos + 12 + length, 4);
    if (data_crc != reference_masked_crc(u(pos + 12), length)) throw std::runtime_error("data CRC");
    events.push_back(decode_event(file.substr(pos + 12, length)));
    pos += 12 + length + 4;
  }
  return events;
}

}  // namespace ming::test
