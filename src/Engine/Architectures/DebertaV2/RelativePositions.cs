using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DeBERTa's relative positions (HF build_relative_position and make_log_bucket_position): for query i and key j the
/// distance i − j, kept as it is within ±position_buckets/2 and log-bucketed beyond:
/// <c>bucket(r) = sign(r) · (ceil(log(|r| / mid) / log((max − 1) / mid) · (mid − 1)) + mid)</c> for |r| &gt; mid.
/// Computed in float32 with the same tensor ops as HF (its ceil decides the bucket, so the rounding must be the same);
/// tests compare every distance with PyTorch's table. These are constants of the length: the same for the input
/// and the reference, so the gathers that use them are linear maps.
/// </summary>
public static class RelativePositions
{
    /// <summary>[L, L] bucketed distances i − j (int64).</summary>
    public static Tensor Build(long length, int buckets, int maxPosition, Device device)
    {
        using var scope = NewDisposeScope();
        var ids = arange(length, dtype: ScalarType.Int64, device: device);
        var rel = ids.unsqueeze(1) - ids.unsqueeze(0);
        var result = buckets > 0 && maxPosition > 0 ? LogBucket(rel, buckets, maxPosition) : rel;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>make_log_bucket_position of int64 distances, returned as int64.</summary>
    public static Tensor LogBucket(Tensor rel, int buckets, int maxPosition)
    {
        using var scope = NewDisposeScope();
        int mid = buckets / 2;
        var sign = rel.sign();
        var inside = rel.lt(mid).logical_and(rel.gt(-mid));
        var absPos = where(inside, full_like(rel, mid - 1), rel.abs());
        var ratio = absPos.to_type(ScalarType.Float32) / (float)mid;
        var denominator = tensor((float)((maxPosition - 1) / (double)mid), dtype: ScalarType.Float32, device: rel.device).log();
        var logPos = (ratio.log() / denominator * (float)(mid - 1)).ceil() + (float)mid;
        var bucket = where(absPos.le(mid), rel.to_type(ScalarType.Float32), logPos * sign.to_type(ScalarType.Float32));
        return bucket.to_type(ScalarType.Int64).MoveToOuterDisposeScope();
    }
}
