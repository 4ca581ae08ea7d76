using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Fused CPU loops for the rules' elementwise tails, where composing torch ops costs one pass over memory per op.
/// Only where it pays: the promoted secant (GELU) spends most of its composition on float64 passes; a fused exp
/// rule for the softmax, even vectorized, measured no faster than libtorch's vectorized exp passes, so it is not here.
/// Each kernel does exactly the arithmetic of the torch composition it replaces (same operations, same order, same
/// rounding), so results are bit-identical and the torch composition stays as the path for accelerators, other
/// dtypes and layouts (and as the tests' reference).
/// </summary>
public static unsafe partial class CpuKernels
{
    /// <summary>Off (on the calling thread) for tests and <c>fleet bench … --no-kernels</c>, to compare with the torch composition.</summary>
    public static bool Enabled { get => !_disabled; set => _disabled = !value; }
    [ThreadStatic] private static bool _disabled;

    /// <summary>How many times a kernel ran on the calling thread (tests check that the fused path is the one taken).</summary>
    internal static long Runs => _runs;
    [ThreadStatic] private static long _runs;

    private const long Chunk = 1 << 16;

    /// <summary>
    /// The generic rescale tail for float32 activations with float64 values (<see cref="RescaleRule.Apply"/> with
    /// promotion): <c>y = (float) g</c>, <c>m = (float) ((g − g0) / ((double) x − (double) x0))</c>; where
    /// <c>x == x0</c>, <c>m</c> is NaN and counted, for the caller to fill with the derivative. x0 and g0 are either
    /// x's shape or one row shared along the leading dimension. Replaces eight passes (two casts, two differences,
    /// the zero test and its reduction, the division, two casts back) by one.
    /// </summary>
    internal static bool TrySecant(Tensor x, Tensor x0, Tensor g, Tensor g0, out Tensor y, out Tensor m, out long equal)
    {
        y = m = null!;
        equal = 0;
        if (!Enabled || x.device_type != TorchSharp.DeviceType.CPU || x.dtype != ScalarType.Float32 || x0.dtype != ScalarType.Float32
            || g.dtype != ScalarType.Float64 || g0.dtype != ScalarType.Float64
            || !x.is_contiguous() || !x0.is_contiguous() || !g.is_contiguous() || !g0.is_contiguous()
            || !g.shape.SequenceEqual(x.shape) || !g0.shape.SequenceEqual(x0.shape) || !SameOrSharedRow(x.shape, x0.shape))
            return false;
        long n = x.numel(), row = x0.numel();
        y = empty_like(x);
        m = empty_like(x);
        nint px = Address(x), px0 = Address(x0), pg = Address(g), pg0 = Address(g0);
        nint py = Address(y), pm = Address(m);
        long count = 0;
        Parallel.For(0, (n + Chunk - 1) / Chunk, c =>
        {
            long start = c * Chunk, end = Math.Min(n, start + Chunk), local = 0;
            float* xs = (float*)px, x0s = (float*)px0, ys = (float*)py, ms = (float*)pm;
            double* gs = (double*)pg, g0s = (double*)pg0;
            // Walk [start, end) in runs that stay within one reference row, so the inner loop has no division.
            for (long i = start; i < end;)
            {
                long j0 = i % row, run = Math.Min(end - i, row - j0);
                float* xr = xs + i, x0r = x0s + j0, yr = ys + i, mr = ms + i;
                double* gr = gs + i, g0r = g0s + j0;
                for (long k = 0; k < run; k++)
                {
                    double d = (double)xr[k] - x0r[k];
                    double gi = gr[k];
                    yr[k] = (float)gi;
                    if (d != 0) mr[k] = (float)((gi - g0r[k]) / d);
                    else { mr[k] = float.NaN; local++; }
                }
                i += run;
            }
            if (local > 0) Interlocked.Add(ref count, local);
        });
        equal = count;
        _runs++;
        return true;
    }

    /// <summary>x0's shape equals x's, or is x's with a leading dimension of 1 (one reference shared by the batch).</summary>
    private static bool SameOrSharedRow(long[] x, long[] x0) =>
        x.Length == x0.Length && x.Length > 0 && (x0[0] == x[0] || x0[0] == 1) && x.AsSpan(1).SequenceEqual(x0.AsSpan(1));

    private static nint Address(Tensor t) =>
        (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
}
