import { z } from "zod";
import { ValidationError, coerceError } from "../../src/errors/errors";

describe("coerceError", () => {
  it("turns a zod error into a ValidationError whose message names each field and problem (what operators see as lastError)", () => {
    const thrown = (() => {
      try {
        z.object({ to: z.array(z.email()) }).parse({ to: ["not-an-address"] });
      } catch (error) {
        return error;
      }
    })();
    const error = coerceError(thrown);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toBe("invalid data: to.0: Invalid email address");
  });

  it("keeps errors as they are and wraps what is not one", () => {
    const original = new TypeError("boom");
    expect(coerceError(original)).toBe(original);
    expect(coerceError("text").message).toBe("text");
    expect(coerceError({ a: 1 }).message).toBe('non-error thrown: {"a":1}');
  });
});
