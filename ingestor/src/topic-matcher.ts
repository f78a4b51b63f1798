import { exec, matches } from 'mqtt-pattern';
import type { TopicParams } from './parsers/types.ts';

/** An active `mqtt_topic` row as the ingestor uses it. */
export interface TopicPattern {
  id: string;
  pattern: string;
  parser: string;
  parserConfig: unknown;
  priority: number;
}

export interface TopicMatch {
  pattern: TopicPattern;
  params: TopicParams;
}

/** Topic → match cache entries kept per connection; a fleet republishes the same topics. */
const CACHE_LIMIT = 50_000;

/**
 * Matches topics against a connection's patterns with named wildcards (`+name`, `#name`) using
 * `mqtt-pattern`. The lowest priority wins, then the lowest id. Results are cached per topic
 * because matching is the per-message hot path and topics repeat.
 */
export class TopicMatcher {
  private readonly patterns: readonly TopicPattern[];
  private readonly cache = new Map<string, TopicMatch | null>();

  constructor(patterns: readonly TopicPattern[]) {
    this.patterns = [...patterns].sort((a, b) => a.priority - b.priority || Number(a.id) - Number(b.id));
  }

  match(topic: string): TopicMatch | undefined {
    const cached = this.cache.get(topic);
    if (cached !== undefined) return cached ?? undefined;
    let found: TopicMatch | null = null;
    for (const pattern of this.patterns) {
      // `$`-topics (broker internals) never match a wildcard in MQTT; the library does not know that.
      if (topic.startsWith('$') && !pattern.pattern.startsWith('$')) continue;
      if (!matches(pattern.pattern, topic)) continue;
      found = { pattern, params: exec(pattern.pattern, topic) ?? {} };
      break;
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(topic, found);
    return found ?? undefined;
  }

  /** Same patterns (by id, text, parser, config and priority)? Then the cache can be kept. */
  sameAs(patterns: readonly TopicPattern[]): boolean {
    if (patterns.length !== this.patterns.length) return false;
    const key = (p: TopicPattern) => JSON.stringify([p.id, p.pattern, p.parser, p.parserConfig, p.priority]);
    const mine = new Set(this.patterns.map(key));
    return patterns.every((p) => mine.has(key(p)));
  }
}
