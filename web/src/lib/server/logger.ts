import pino from 'pino';
import { BFG_LOG_LEVEL } from '$app/env/private';

/** The dashboard's root logger: JSON lines on stdout; tokens, cookies and passwords never logged. */
export const logger = pino({
  name: 'bfg-web',
  level: BFG_LOG_LEVEL ?? 'info',
  redact: ['req.headers.cookie', 'req.headers.authorization', '*.password', '*.accessToken'],
});
