from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0008_suspect_quality'),
    ]

    operations = [
        migrations.AddField(
            model_name='importjob',
            name='attempts',
            field=models.PositiveIntegerField(default=0),
        ),
    ]
