/**
 * V8 heap limits the ingestor runs with. Node's defaults on a 64-bit machine let the young
 * generation grow to 128 MB (two 64 MB semi-spaces) and the old one to gigabytes before it is
 * collected: under a sustained stream, where every message waits for its batch's commit and so
 * survives a scavenge or two, an ingestor holding 16 MiB of messages peaked at 400-600 MB of
 * resident memory, nearly all of it garbage not yet collected. With an 8 MB semi-space and a
 * 256 MB old space it peaks at ~190 MB (README, Benchmark) at the same throughput (16 MB: ~210 MB;
 * the collections are more frequent, each shorter). What it holds is bounded by
 * BFG_MAX_PENDING_BYTES and BFG_DISCOVERY_MAX_TOPICS, well below the old space's limit.
 *
 * Node reads these from its command line or NODE_OPTIONS only, before any of our code runs, so
 * every way the ingestor is started passes them: the package scripts, main.ts's shebang (the
 * bin), the Dockerfile's NODE_OPTIONS, the benchmark (tests/integration/deployment-files.test.ts
 * checks they all say this).
 */
export const INGESTOR_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--max-old-space-size=256'];
