import pino from 'pino';

/** The dashboard's root logger: JSON lines on stdout; tokens, cookies and passwords never logged. */
export const logger = pino({
  name: 'bfg-web',
  level: process.env['BFG_LOG_LEVEL'] ?? 'info',
  redact: ['req.headers.cookie', 'req.headers.authorization', '*.password', '*.accessToken'],
});
