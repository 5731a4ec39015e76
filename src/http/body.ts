import { isUtf8 } from "node:buffer";
import express, { type RequestHandler } from "express";
import { ValidationError } from "../errors/errors";
import { UnsupportedMediaTypeError } from "./problem";

export const DEFAULT_BODY_LIMIT = 256 * 1024;

/**
 * JSON bodies only: a body of another type is 415, a missing one 400, one
 * over `limit` bytes 413 (body-parser stops reading at the limit), and
 * malformed JSON 400 — all turned into problems by src/http/problem.ts.
 */
export function jsonBody(limit = DEFAULT_BODY_LIMIT): RequestHandler {
  const parse = express.json({
    limit,
    strict: true,
    type: () => true,
    verify: (_req, _res, buf) => {
      if (!isUtf8(buf)) throw new ValidationError("the request body is not valid UTF-8", [{ path: "(body)", message: "is not valid UTF-8" }]);
    },
  });
  return (req, res, next) => {
    const kind = req.is(["application/json", "application/*+json"]);
    // No body: nothing to type-check (clients often send Content-Length: 0 and no Content-Type).
    if (kind === null || req.get("content-length") === "0") {
      throw new ValidationError("a JSON request body is required", [{ path: "(body)", message: "a JSON body is required" }]);
    }
    if (kind === false) {
      throw new UnsupportedMediaTypeError(`Content-Type must be application/json (got ${JSON.stringify(req.get("content-type") ?? "none")})`);
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.get("content-type") ?? "")?.[1];
    if (charset !== undefined && charset.toLowerCase() !== "utf-8") {
      throw new UnsupportedMediaTypeError(`unsupported charset "${charset}": JSON bodies are UTF-8`);
    }
    parse(req, res, next);
  };
}
