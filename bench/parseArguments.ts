import { InvalidArgumentError } from 'commander';

/** A commander argument parser for an integer from `min` to `max`. */
export const integerBetween = (min: number, max: number) => (value: string): number => {
  const number = Number(value);
  if (!Number.isInteger(number) || number < min || number > max) throw new InvalidArgumentError(`an integer from ${min} to ${max}`);
  return number;
};

/** A commander argument parser for a number in (0, max], fractions allowed. */
export const positiveNumber = (max: number) => (value: string): number => {
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0 || number > max) throw new InvalidArgumentError(`a number in (0, ${max}]`);
  return number;
};
