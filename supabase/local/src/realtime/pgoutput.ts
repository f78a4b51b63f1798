/**
 * Decoder for the messages of PostgreSQL's logical replication output plugin `pgoutput`
 * (protocol version 1), as carried in XLogData frames. Written here rather than taken from
 * postgres.js' `subscribe()` because that one hides its stream (no backpressure: a slow consumer
 * makes it buffer without limit), drops transaction boundaries and commit timestamps, and parses
 * values with the JS-side type parsers; Realtime needs the raw text of each value and its type to
 * build the JSON Supabase sends. Layouts: PostgreSQL docs, "Logical Replication Message Formats".
 */

/** A column of a relation as the Relation message describes it. */
export interface RelationColumn {
  name: string;
  typeOid: number;
  /** Part of the replica identity (pgoutput flag 1): under REPLICA IDENTITY FULL, every column is. */
  isIdentity: boolean;
}

export interface Relation {
  oid: number;
  schema: string;
  table: string;
  /** `d` default (primary key), `n` nothing, `f` full, `i` index. */
  replicaIdentity: string;
  columns: RelationColumn[];
}

/** A tuple's values as text (pgoutput's text format); null = SQL NULL; undefined = unchanged TOAST. */
export type TextTuple = (string | null | undefined)[];

export type PgOutputMessage =
  | { tag: 'begin'; finalLsn: bigint; commitTime: Date; xid: number }
  | { tag: 'commit'; commitLsn: bigint; endLsn: bigint; commitTime: Date }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'type'; oid: number; schema: string; name: string }
  | { tag: 'insert'; relationOid: number; tuple: TextTuple }
  | { tag: 'update'; relationOid: number; old: { kind: 'key' | 'full'; tuple: TextTuple } | null; tuple: TextTuple }
  | { tag: 'delete'; relationOid: number; old: { kind: 'key' | 'full'; tuple: TextTuple } }
  | { tag: 'truncate'; relationOids: number[] }
  | { tag: 'other' };

/** Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

export function pgTime(us: bigint): Date {
  return new Date(Number((us + PG_EPOCH_US) / 1000n));
}

class Reader {
  offset = 0;
  private readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  u8(): number {
    return this.buf[this.offset++]!;
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  i64(): bigint {
    const v = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  /** A NUL-terminated string. */
  cstring(): string {
    const end = this.buf.indexOf(0, this.offset);
    const s = this.buf.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }
  text(length: number): string {
    const s = this.buf.toString('utf8', this.offset, this.offset + length);
    this.offset += length;
    return s;
  }
  tuple(): TextTuple {
    const n = this.i16();
    const values: TextTuple = new Array<string | null | undefined>(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      if (kind === 0x6e)
        values[i] = null; // 'n'
      else if (kind === 0x75)
        values[i] = undefined; // 'u'
      else values[i] = this.text(this.i32()); // 't' (text); 'b' never appears without binary mode
    }
    return values;
  }
}

/** Decodes one pgoutput message (the payload of an XLogData frame). */
export function decodePgOutput(message: Buffer): PgOutputMessage {
  const r = new Reader(message);
  switch (String.fromCharCode(r.u8())) {
    case 'B': {
      const finalLsn = r.i64();
      const commitTime = pgTime(r.i64());
      return { tag: 'begin', finalLsn, commitTime, xid: r.i32() };
    }
    case 'C': {
      r.u8(); // flags
      const commitLsn = r.i64();
      const endLsn = r.i64();
      return { tag: 'commit', commitLsn, endLsn, commitTime: pgTime(r.i64()) };
    }
    case 'R': {
      const oid = r.u32();
      const schema = r.cstring() || 'pg_catalog';
      const table = r.cstring();
      const replicaIdentity = String.fromCharCode(r.u8());
      const count = r.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < count; i++) {
        const flags = r.u8();
        const name = r.cstring();
        const typeOid = r.u32();
        r.i32(); // typmod
        columns.push({ name, typeOid, isIdentity: (flags & 1) === 1 });
      }
      return { tag: 'relation', relation: { oid, schema, table, replicaIdentity, columns } };
    }
    case 'Y': {
      const oid = r.u32();
      return { tag: 'type', oid, schema: r.cstring(), name: r.cstring() };
    }
    case 'I': {
      const relationOid = r.u32();
      r.u8(); // 'N'
      return { tag: 'insert', relationOid, tuple: r.tuple() };
    }
    case 'U': {
      const relationOid = r.u32();
      const kind = String.fromCharCode(r.u8());
      let old: { kind: 'key' | 'full'; tuple: TextTuple } | null = null;
      if (kind === 'K' || kind === 'O') {
        old = { kind: kind === 'K' ? 'key' : 'full', tuple: r.tuple() };
        r.u8(); // 'N'
      }
      return { tag: 'update', relationOid, old, tuple: r.tuple() };
    }
    case 'D': {
      const relationOid = r.u32();
      const kind = String.fromCharCode(r.u8());
      return { tag: 'delete', relationOid, old: { kind: kind === 'K' ? 'key' : 'full', tuple: r.tuple() } };
    }
    case 'T': {
      const count = r.i32();
      r.u8(); // options
      const relationOids: number[] = [];
      for (let i = 0; i < count; i++) relationOids.push(r.u32());
      return { tag: 'truncate', relationOids };
    }
    default:
      return { tag: 'other' };
  }
}
