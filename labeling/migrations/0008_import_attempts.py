from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0007_import_heartbeat'),
    ]

    operations = [
        migrations.AddField(
            model_name='importjob',
            name='attempts',
            field=models.PositiveIntegerField(default=0),
        ),
    ]
