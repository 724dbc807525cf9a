// A WebM (Matroska) reader for WebCodecs: the first video track's decoder configuration, then its
// frames' encoded blocks in file order, read from a stream that is never held whole (one element at
// a time, MAX_ELEMENT_BYTES at most). What it does not read (laced or encrypted blocks, codecs other
// than VP8 and VP9, Tracks after the first Cluster) is `Unsupported`: the caller then reads the
// frames another way. Element ids and layout: the Matroska specification (RFC 9559).

export class Unsupported extends Error {}
// The file ends before an element it declares does: it is cut short (a download that breaks off
// fails as a read instead).
export class CutShort extends Error {}

const ID = {
  EBML: 0x1a45dfa3, DocType: 0x4282, Segment: 0x18538067, Info: 0x1549a966, TimestampScale: 0x2ad7b1, Duration: 0x4489,
  Tracks: 0x1654ae6b, TrackEntry: 0xae, TrackNumber: 0xd7, TrackType: 0x83, CodecID: 0x86,
  Video: 0xe0, PixelWidth: 0xb0, PixelHeight: 0xba, ContentEncodings: 0x6d80, Cluster: 0x1f43b675,
  Timestamp: 0xe7, SimpleBlock: 0xa3, BlockGroup: 0xa0, Block: 0xa1, ReferenceBlock: 0xfb,
};
// The children of a Segment: an element of unknown size (a recording still being written) ends where
// one of these begins.
const SEGMENT_CHILDREN = new Set([0x114d9b74, ID.Info, ID.Tracks, ID.Cluster, 0x1c53bb6b, 0x1043a770, 0x1254c367, 0x1941a469]);
const UNKNOWN = -1;
// The largest element held in memory: far above any frame's block or a Tracks element.
const MAX_ELEMENT_BYTES = 64 << 20;

// Bytes pulled from a stream reader as the parser asks for them, consumed ones let go.
class Bytes {
  constructor(reader) {
    this.reader = reader;
    this.buffer = new Uint8Array(0);
    this.at = 0;
    this.ended = false;
    // Bytes consumed since the start of the stream.
    this.position = 0;
  }

  // Whether `n` more bytes are there (false: the stream ended first). The pieces read meanwhile
  // are joined once, so an element arriving in many pieces is copied once.
  async have(n) {
    let available = this.buffer.length - this.at;
    if (available >= n) return true;
    const parts = [this.buffer.subarray(this.at)];
    while (available < n && !this.ended) {
      const { value, done } = await this.reader.read();
      if (done) this.ended = true;
      else {
        parts.push(value);
        available += value.length;
      }
    }
    this.buffer = new Uint8Array(available);
    let at = 0;
    for (const part of parts) {
      this.buffer.set(part, at);
      at += part.length;
    }
    this.at = 0;
    return available >= n;
  }

  async take(n) {
    if (n > MAX_ELEMENT_BYTES) throw new Unsupported(`an element of ${n} bytes`);
    if (!await this.have(n)) throw new CutShort('the file ends inside an element');
    const out = this.buffer.slice(this.at, this.at + n);
    this.at += n;
    this.position += n;
    return out;
  }

  async skip(n) {
    while (n > 0) {
      if (!await this.have(1)) throw new CutShort('the file ends inside an element');
      const step = Math.min(n, this.buffer.length - this.at);
      this.at += step;
      this.position += step;
      n -= step;
    }
  }

  // The EBML variable-length integer next in the stream (see `vintAt`); null at its end.
  async vint(isId) {
    if (!await this.have(1)) return null;
    await this.have(8);
    const read = vintAt(this.buffer, this.at, isId);
    if (!read) throw new CutShort('the file ends inside an element header');
    this.at += read.length;
    this.position += read.length;
    return read.value;
  }

  // The next element's id and size, or null at the end of the stream.
  async header() {
    const id = await this.vint(true);
    if (id === null) return null;
    const size = await this.vint(false);
    if (size === null) throw new CutShort('the file ends inside an element header');
    return { id, size };
  }
}

// The EBML variable-length integer at `data[at]`: `{value, length}`, where an element id keeps its
// length marker and a size does not (all value bits set is UNKNOWN); null where `data` ends first.
function vintAt(data, at, isId) {
  const first = data[at];
  const length = Math.clz32(first) - 23;
  if (length < 1 || length > (isId ? 4 : 8)) throw new Error(`a malformed ${isId ? 'element id' : 'size'}`);
  if (at + length > data.length) return null;
  let value = isId ? first : first & (0xff >> length);
  let allOnes = value === (0xff >> length);
  for (let i = 1; i < length; i++) {
    value = value * 256 + data[at + i];
    allOnes &&= data[at + i] === 0xff;
  }
  return { value: !isId && allOnes ? UNKNOWN : value, length };
}

// The children of an element held whole: [{id, data}].
function children(data) {
  const out = [];
  let at = 0;
  const next = (isId) => {
    const read = vintAt(data, at, isId);
    if (!read) throw new Error('a malformed element');
    at += read.length;
    return read.value;
  };
  while (at < data.length) {
    const id = next(true), size = next(false);
    if (size === UNKNOWN || at + size > data.length) throw new Error('an element larger than its parent');
    out.push({ id, data: data.subarray(at, at + size) });
    at += size;
  }
  return out;
}

const uint = (data) => data.reduce((value, byte) => value * 256 + byte, 0);
// An EBML float (4 or 8 bytes, big-endian), or null where there is none or it is no length.
function float(data) {
  if (!data || (data.length !== 4 && data.length !== 8)) return null;
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const value = data.length === 4 ? view.getFloat32(0) : view.getFloat64(0);
  return Number.isFinite(value) && value > 0 ? value : null;
}
const text = (data = new Uint8Array(0)) => new TextDecoder().decode(data).replace(/\0+$/, '');

// The codec of a Matroska track, VP8 or VP9 (WebM's own, whose key frames say how their pictures
// are coded; see `keyFrameConfig`); others are Unsupported.
function decoderConfig(codecId, codedWidth, codedHeight) {
  const codec = { V_VP8: 'vp8', V_VP9: 'vp9' }[codecId];
  if (!codec) throw new Unsupported(`codec ${codecId}`);
  return { codec, codedWidth, codedHeight };
}

const BT601 = { primaries: 'smpte170m', transfer: 'smpte170m', matrix: 'smpte170m' };
const BT709 = { primaries: 'bt709', transfer: 'bt709', matrix: 'bt709' };

// The `VideoDecoderConfig` for a track's first key frame: the codec string and how colour is coded,
// as ffmpeg (the native CLI's frames) reads it. A decoder that is not told takes BT.709. VP8 is
// BT.601 (RFC 6386, 9.2), whatever its track's Colour element says (Chromium's <video> takes that
// element's matrix; ffmpeg does not). A VP9 key frame's header (VP9 bitstream specification, 6.2)
// names its profile, bit depth, colour space and range: unknown, BT.601 and SMPTE 170M read as
// BT.601, BT.709 as itself; others (SMPTE 240M, BT.2020, RGB) are Unsupported. VP9's codec string
// also names a level, which only a scan of the whole stream could tell; 1.0 is given, which
// decoders take as a hint.
export function keyFrameConfig(config, keyFrame) {
  if (config.codec === 'vp8') return { ...config, colorSpace: { ...BT601, fullRange: false } };
  let bit = 0;
  const read = (n) => {
    let value = 0;
    for (let i = 0; i < n; i++, bit++) {
      if (bit >= keyFrame.length * 8) throw new Error('a VP9 key frame cut short');
      value = value * 2 + ((keyFrame[bit >> 3] >> (7 - (bit & 7))) & 1);
    }
    return value;
  };
  if (read(2) !== 2) throw new Error('a VP9 frame without its frame marker');
  const profile = read(1) | (read(1) << 1);
  if (profile === 3) read(1);
  if (read(1)) throw new Unsupported('a VP9 stream that starts by repeating a frame');
  if (read(1) !== 0) throw new Error('a VP9 stream that starts without a key frame');
  read(2);
  if (read(24) !== 0x498342) throw new Error('a VP9 key frame without its sync code');
  const depth = profile >= 2 ? (read(1) ? 12 : 10) : 8;
  const space = read(3);
  const fullRange = space !== 7 && read(1) === 1;
  const two = (n) => String(n).padStart(2, '0');
  const codec = `vp09.${two(profile)}.10.${two(depth)}`;
  if (space <= 1 || space === 3) return { ...config, codec, colorSpace: { ...BT601, fullRange } };
  if (space === 2) return { ...config, codec, colorSpace: { ...BT709, fullRange } };
  throw new Unsupported(`VP9 colour space ${space}`);
}

// The first video track of a Tracks element: its number and decoder configuration.
function videoTrack(tracks) {
  for (const entry of children(tracks).filter((c) => c.id === ID.TrackEntry)) {
    const fields = new Map(children(entry.data).map((c) => [c.id, c.data]));
    if (uint(fields.get(ID.TrackType) ?? []) !== 1) continue;
    if (fields.has(ID.ContentEncodings)) throw new Unsupported('compressed or encrypted blocks');
    const video = new Map(children(fields.get(ID.Video) ?? new Uint8Array(0)).map((c) => [c.id, c.data]));
    const width = uint(video.get(ID.PixelWidth) ?? []), height = uint(video.get(ID.PixelHeight) ?? []);
    const config = decoderConfig(text(fields.get(ID.CodecID)), width, height);
    return { number: uint(fields.get(ID.TrackNumber) ?? []), config };
  }
  throw new Unsupported('no video track');
}

// A Block's (or SimpleBlock's) track, timestamp offset and flags, and its frame. Laced blocks
// (several frames in one, an audio habit) are Unsupported.
function block(data) {
  const read = vintAt(data, 0, false);
  if (!read || data.length < read.length + 3) throw new Error('a malformed block');
  const { value: track, length } = read;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const offset = view.getInt16(length), flags = data[length + 2];
  if (flags & 0x06) throw new Unsupported('laced video blocks');
  return { track, offset, flags, frame: data.subarray(length + 3) };
}

// Opens the WebM file that `reader` (a ReadableStream's default reader) delivers: resolves to
// `{config, blocks}` once its video track is known, where `config` is the track's codec and size
// (`keyFrameConfig` completes it) and `blocks` yields `{timestamp (microseconds), key, data}` in
// file order. Not a WebM file at all is Unsupported; a malformed one is an Error, from `open` or
// from `blocks`.
export async function openWebm(reader) {
  const bytes = new Bytes(reader);
  const ebml = await bytes.header();
  if (!ebml || ebml.id !== ID.EBML || ebml.size === UNKNOWN) throw new Unsupported('not a Matroska file');
  // DocType is optional, and "matroska" when left out.
  const docType = text(children(await bytes.take(ebml.size)).find((c) => c.id === ID.DocType)?.data) || 'matroska';
  if (docType !== 'webm' && docType !== 'matroska') throw new Unsupported(`document type ${docType}`);
  const segment = await bytes.header();
  if (!segment || segment.id !== ID.Segment) throw new Error('no Segment after the EBML header');
  // A file cut short between elements ends before its Segment does, where that has a size.
  const segmentEnd = segment.size === UNKNOWN ? Infinity : bytes.position + segment.size;

  // The Segment's Duration, in ticks of `scale`, where Info gives it.
  let scale = 1e6, track = null, duration = null;
  // An element header read past the end of an unknown-size Cluster: the next Segment child.
  let next = null;
  const nextChild = async () => {
    const header = next ?? await bytes.header();
    next = null;
    return header;
  };
  // Info (the timestamps' scale) and Tracks may come in either order, both before the first Cluster.
  for (;;) {
    const child = await nextChild();
    if (!child) throw new Unsupported('no frames before the end of the file');
    if (child.id === ID.Cluster) {
      if (!track) throw new Unsupported('frames before the Tracks');
      next = child;
      break;
    }
    if (child.size === UNKNOWN) throw new Unsupported('a Segment child of unknown size');
    if (child.id === ID.Info) {
      const info = children(await bytes.take(child.size));
      const found = info.find((c) => c.id === ID.TimestampScale);
      if (found) scale = uint(found.data);
      if (!(scale > 0)) throw new Error('a TimestampScale of 0');
      duration = float(info.find((c) => c.id === ID.Duration)?.data);
    } else if (child.id === ID.Tracks && !track) {
      track = videoTrack(await bytes.take(child.size));
    } else {
      await bytes.skip(child.size);
    }
  }

  // The first block of any track (the file's clock starts there, as the element's and ffmpeg's
  // do), and the last two video blocks read.
  let first = null, last = null, previous = null;
  const microseconds = (ticks) => Math.round((ticks * scale) / 1000);
  // A file that ends before its elements do, but after its last picture: its Cues or Tags, or a
  // Segment size that overshoots. Where the last picture, lasting as long as the one before it,
  // reaches the stated duration (within half that), nothing shown is missing: it is read as whole.
  const picturesWhole = () => {
    if (duration === null || last === null || previous === null) return false;
    const step = last - previous;
    return last + step >= microseconds(duration) - step / 2;
  };
  async function* blocks() {
    try {
      yield* clusters();
    } catch (error) {
      if (!(error instanceof CutShort && picturesWhole())) throw error;
    }
  }
  async function* clusters() {
    for (;;) {
      const child = await nextChild();
      if (!child) {
        if (segmentEnd !== Infinity && bytes.position < segmentEnd) throw new CutShort('the file ends before its Segment does');
        return;
      }
      if (child.id !== ID.Cluster) {
        if (child.size === UNKNOWN) throw new Error('a Segment child of unknown size');
        await bytes.skip(child.size);
        continue;
      }
      let clusterTime = null;
      const end = child.size === UNKNOWN ? Infinity : bytes.position + child.size;
      while (bytes.position < end) {
        const header = await bytes.header();
        if (!header) {
          if (end !== Infinity) throw new CutShort('the file ends inside a Cluster');
          return;
        }
        if (end === Infinity && SEGMENT_CHILDREN.has(header.id)) {
          next = header;
          break;
        }
        if (header.size === UNKNOWN) throw new Error('a Cluster child of unknown size');
        if (bytes.position + header.size > end) throw new Error('a Cluster child larger than the Cluster');
        if (header.id === ID.Timestamp) {
          clusterTime = uint(await bytes.take(header.size));
        } else if (header.id === ID.SimpleBlock || header.id === ID.BlockGroup) {
          const data = await bytes.take(header.size);
          if (clusterTime === null) throw new Error('a block before its Cluster\'s Timestamp');
          let parsed, key;
          if (header.id === ID.SimpleBlock) {
            parsed = block(data);
            key = (parsed.flags & 0x80) !== 0;
          } else {
            const parts = children(data);
            const inner = parts.find((c) => c.id === ID.Block);
            if (!inner) continue;
            parsed = block(inner.data);
            key = !parts.some((c) => c.id === ID.ReferenceBlock);
          }
          const timestamp = microseconds(clusterTime + parsed.offset);
          first ??= timestamp;
          if (parsed.track !== track.number) continue;
          [previous, last] = [last, timestamp];
          yield { timestamp, key, data: parsed.frame, first };
        } else {
          await bytes.skip(header.size);
        }
      }
    }
  }

  return { config: track.config, blocks: blocks() };
}
