using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// A batch of texts of several lengths padded to one width W, rows sorted so that texts of one length are contiguous:
/// group g is the next <see cref="Rows"/>[g] rows. Each reference tensor of the batch then has one row per group
/// ([groups, W, H]: that length's reference, padded like its texts), and <see cref="Masks"/> [groups, W] is each
/// group's attention mask. <see cref="Names"/>, one per reference of the batch (its kind or text), keys the
/// <see cref="ReferenceCache"/>; null: the references are not cached.
/// </summary>
public sealed record ReferenceGroups(long[] Rows, Tensor Masks, IReadOnlyList<string>? Names = null)
{
    public int Count => Rows.Length;

    /// <summary>The group of each row, for groups of <paramref name="rowsPerGroup"/> contiguous rows.</summary>
    public static long[] GroupOfRow(long[] rowsPerGroup) =>
        rowsPerGroup.SelectMany((count, g) => Enumerable.Repeat((long)g, (int)count)).ToArray();

    /// <summary>Each group's token length (its mask's sum).</summary>
    public int[] Lengths() => Masks.sum(1).data<long>().Select(l => (int)l).ToArray();

    /// <summary>The groups of rows [start, start + count): the same structure for a slice of the batch.</summary>
    public (ReferenceGroups Groups, long FirstGroup) Slice(long start, long count)
    {
        var rows = new List<long>();
        long first = -1, at = 0;
        for (int g = 0; g < Rows.Length; g++)
        {
            long lo = Math.Max(at, start), hi = Math.Min(at + Rows[g], start + count);
            if (hi > lo)
            {
                if (first < 0) first = g;
                rows.Add(hi - lo);
            }
            at += Rows[g];
        }
        return (new ReferenceGroups(rows.ToArray(), Masks.narrow(0, first, rows.Count), Names), first);
    }
}
