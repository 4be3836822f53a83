#include "ming/train/tensorboard.h"

#include <isa-l/crc.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "ming/core/error.h"

namespace ming::train {

namespace fs = std::filesystem;

namespace {

// Protobuf wire format: a field key is (number << 3) | wire type; 0 varint, 1 fixed64,
// 2 length-delimited, 5 fixed32.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_key(std::string& out, int field, int wire) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire));
}
template <typename T>
void put_fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  // ISA-L's iSCSI CRC is CRC32C without the final inversion.
  uint32_t crc = 0xFFFFFFFFu;
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  while (size > 0) {
    const int n = static_cast<int>(std::min<size_t>(size, 1u << 30));
    crc = crc32_iscsi(p, n, crc);
    p += n;
    size -= static_cast<size_t>(n);
  }
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& payload) {
  std::string out;
  const uint64_t length = payload.size();
  put_fixed(out, length);
  put_fixed(out, masked_crc32c(out.data(), sizeof(length)));
  out += payload;
  put_fixed(out, masked_crc32c(payload.data(), payload.size()));
  return out;
}

EventWriter::EventWriter(const fs::path& dir) {
  fs::create_directories(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = dir / fmt::format("events.out.tfevents.{}.{}.{}", static_cast<int64_t>(unix_now()), host,
                            static_cast<int64_t>(getpid()));
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_)
    fail("report_to tensorboard: cannot create '{}': {}", path_.string(), std::strerror(errno));
  std::string version;
  put_bytes(version, 3, "brain.Event:2");
  write_event(0, version);
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);
}

void EventWriter::write_event(int64_t step, const std::string& fields) {
  std::string event;
  put_key(event, 1, 1);
  put_fixed(event, unix_now());
  put_key(event, 2, 0);
  put_varint(event, static_cast<uint64_t>(step));
  event += fields;
  const std::string record = tfrecord(event);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
      std::fflush(file_) != 0)
    fail("report_to tensorboard: cannot write '{}': {}", path_.string(), std::strerror(errno));
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string v;
  put_bytes(v, 1, tag);
  put_key(v, 2, 5);
  put_fixed(v, static_cast<float>(value));
  std::string summary;
  put_bytes(summary, 1, v);
  std::string fields;
  put_bytes(fields, 5, summary);
  write_event(step, fields);
}

void EventWriter::add_metrics(const io::Json& line) {
  const int64_t step = line.value("step", int64_t{0});
  for (auto it = line.begin(); it != line.end(); ++it) {
    if (it.key() == "step" || !it->is_number()) continue;
    const std::string& key = it.key();
    const std::string tag = key.rfind("eval_", 0) == 0 ? "eval/" + key.substr(5) : "train/" + key;
    add_scalar(tag, it->get<double>(), step);
  }
}

void EventWriter::session_start(int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string fields;
  put_bytes(fields, 6, log);
  write_event(step, fields);
}

}  // namespace ming::train
